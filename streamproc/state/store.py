"""The worker's Faust table store: the table in memory, as with ``memory://``, and a copy of
its changelog on disk (``state.disk``) that a restarted worker resumes from.

On a rebalance (``on_rebalance``, before Faust's own recovery) every changelog partition
this worker now holds, active or standby, is brought to the log's end by the raw reader
(``kafka.changelog_reader``): a restart with its data dir reads only what was written since,
a worker with an empty data dir reads the whole log at the broker's rate. The partitions
that became active are then loaded from disk into the table, and Faust, asked for the
persisted offsets, finds nothing left to recover: its per-message path never runs for an
active partition. Standby partitions (``table_standby_replicas``) follow the active
owner's writes a fetch at a time (``apply_records``, from ``worker.standbys``), onto the disk
only, so a partition that moves here loads from disk after a read of the last few records.

The worker's own writes (``state.changelog.ChangelogWriter``) reach the disk once the
broker has them (``persist_written``), in the order they were enqueued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from faust.stores import STORES, memory
from faust.types import TP, EventT, Message

from streamproc.config import Settings
from streamproc.engine.lead import LeadState
from streamproc.kafka.changelog_reader import ChangelogRecord, Resume, digest, read_changelog
from streamproc.state.disk import Mark, StateDB
from streamproc.state.lead_cache import LeadCache
from streamproc.state.table_copies import TableCopy

__all__ = ["STORE_URL", "DiskStore", "Seeder", "disk_stores", "register_store"]

log = logging.getLogger(__name__)
# A host part: yarl takes a URL with none for false, and Faust then picks its default store.
STORE_URL = "streamproc-disk://local/"
# The broker's table copies of partitions (changelog topic -> its copy, by partition), for
# the partitions asked (held, with no disk copy of any table): ``state.table_copies``.
Seeder = Callable[[set[int]], Awaitable[Mapping[int, Mapping[str, TableCopy]]]]


def disk_stores(app: Any) -> list[DiskStore]:
    """The app's tables' stores that are ``DiskStore``s, in the order of its tables."""
    return [t.data for t in app.tables.values() if isinstance(t.data, DiskStore)]


def register_store() -> None:
    """Make ``streamproc-disk://`` name this store (tables take ``store=STORE_URL``)."""
    STORES.aliases["streamproc-disk"] = f"{__name__}:DiskStore"


class DiskStore(memory.Store[Any, Any]):
    """A memory store whose changelog partitions are also kept on disk."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._db: StateDB | None = None
        self._loaded: set[int] = set()  # active partitions whose keys are in ``data``
        self._held: set[int] = set()  # partitions whose disk copy is at the log's end
        self.last_read: dict[int, int] = {}  # records the raw reader read, per partition
        self._ends: dict[int, int] = {}  # the log's end offsets the broker gave the reader
        self.settings: Settings | None = None  # ``configure``: the broker to read from
        # The catch-up of every table in this rebalance (``on_rebalance``), until awaited.
        self._catching_up: asyncio.Future[None] | None = None
        # The leads table's: its values in a bounded cache over the disk (``configure``).
        self.cache: LeadCache | None = None
        # Closed by its owner (``close``), not at the table's stop: the worker's SIGTERM
        # hook reads the marks and leads after Faust stopped the tables. Closed there, a
        # database stayed open under the iterator of an eviction scan suspended between
        # two slices, and opening it again failed on RocksDB's lock (300,000 leads: no
        # snapshot written, a 30 s restart instead of 6 s).
        self.closed_by_owner = False
        # Where a partition held without a disk copy is seeded from (the first store's is
        # asked for every table's: ``_seed``); None: read from the changelog's start.
        self.seeder: Seeder | None = None

    def configure(self, settings: Settings, cache_size: int | None = None) -> None:
        """The worker's settings: the raw reader connects with them (TLS, SASL).
        ``cache_size``: keep at most this many values in memory, the others on disk only
        (``state.lead_cache``: the leads table's)."""
        self.settings = settings
        if cache_size is not None:
            self.cache = LeadCache(cache_size)
            self.cache.attach(lambda: self.db, lambda: self._held)
            self.data = self.cache

    # --- the database --------------------------------------------------------------------

    @property
    def topic(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    @property
    def db(self) -> StateDB:
        if self._db is None:
            self._db = StateDB(Path(self.app.conf.datadir) / "state" / self.topic)
        return self._db

    async def on_stop(self) -> None:
        if not self.closed_by_owner:
            self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def persisted_offset(self, tp: TP) -> int | None:
        """Where Faust's recovery starts (after this offset): the disk copy's end."""
        if tp.partition not in self._held:
            return None
        mark = self.db.mark(tp.partition)
        if mark is None:
            return None
        # Never past the end the broker reports (Faust raises ConsistencyError): tansu's
        # falls short of records a killed worker left after its last end marker.
        return min(mark.applied, self._ends.get(tp.partition, 0) - 1)

    # --- rebalances ----------------------------------------------------------------------

    def _partitions(self, tps: Iterable[TP]) -> set[int]:
        topic = self.topic
        return {tp.partition for tp in tps if tp.topic == topic}

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Bring the disk copy of every partition held to the log's end (before Faust's
        recovery asks for ``persisted_offset``), every table's at once.

        Faust calls the tables one after the other, in the order of ``app.tables``: the
        first one's call catches up all of them together, the others wait for it. One
        after the other, each reader's start and end-offset round trips (~0.45 s with
        nothing to read) added up to 1.4 s of every rebalance for the three tables."""
        together = self._catching_up
        stores = disk_stores(self.app)
        if together is None or stores[0] is self:
            together = asyncio.ensure_future(self._all_rebalance(stores))
            for store in stores:
                store._catching_up = together
        self._catching_up = None
        await together

    @staticmethod
    async def _all_rebalance(stores: list[DiskStore]) -> None:
        await _seed(stores)
        await asyncio.gather(*(store._rebalance() for store in stores))

    def _assigned(self) -> tuple[set[int], set[int]]:
        """This table's partitions held now: (actives, standbys)."""
        assignor = self.app.assignor
        actives = self._partitions(assignor.assigned_actives())
        return actives, self._partitions(assignor.assigned_standbys())

    async def _rebalance(self) -> None:
        actives, standbys = self._assigned()
        self._held &= actives | standbys
        for p in self._loaded - actives:
            self._unload(p)
        started = time.monotonic()
        await self.catch_up(actives | standbys)
        log.info(
            "%s: %d records read from the changelog (%s) in %.2f s",
            self.topic,
            sum(self.last_read.values()),
            self.last_read,
            time.monotonic() - started,
        )

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Load the partitions that became active from disk, after the worker's own
        rebalance handlers (they see only what it held before) and before any table's
        recovery callbacks (they decode what was loaded): Faust completes the tables one
        after the other, each with its callbacks, so the first to complete loads them all."""
        await super().on_recovery_completed(active_tps, standby_tps)
        # Every table's active partitions: ``active_tps`` holds only this table's.
        actives = set(self.app.assignor.assigned_actives())
        for store in disk_stores(self.app):
            store.load_active(actives)

    def load_active(self, active_tps: set[TP]) -> None:
        """Load from disk the active partitions not in memory yet; unload the others."""
        actives = self._partitions(active_tps)
        for p in self._loaded - actives:
            self._unload(p)
        if not actives - self._loaded:
            return
        started = time.monotonic()
        loaded = sum(self._load(p) for p in sorted(actives - self._loaded))
        log.info(
            "%s: %d records loaded from disk in %.2f s",
            self.topic,
            loaded,
            time.monotonic() - started,
        )

    async def catch_up(self, partitions: set[int]) -> None:
        """Bring the disk copy of ``partitions`` to the end of the changelog."""
        db = self.db
        resume: dict[int, Resume | None] = {}
        for p in partitions:
            mark = db.mark(p)
            resume[p] = None if mark is None else Resume(*mark)
        if self.settings is None:
            raise RuntimeError("DiskStore.configure(settings) was not called")
        read = await read_changelog(self.settings, self.topic, resume, self._apply_read)
        self.last_read = read.records
        self._ends.update(read.ends)
        self._held |= partitions

    async def _apply_read(
        self, partition: int, records: Sequence[ChangelogRecord], fresh: bool
    ) -> None:
        db = self.db
        if fresh:
            db.wipe(partition)
            if partition in self._loaded:
                self._unload(partition)
            return
        last = records[-1]
        db.apply(
            partition,
            ((r.key, r.value) for r in records),
            Mark(last.offset, last.offset, last.digest),
        )
        if partition in self._loaded:  # keys kept across the rebalance: as Faust would
            self._put_all(partition, [(r.key, r.value) for r in records])

    def seed(self, partition: int, copy: TableCopy) -> None:
        """Start the partition's disk copy from the broker's copy of it, at its mark: the
        catch-up reads the changelog from there (or all of it, if that record is gone)."""
        self.db.replace(partition, copy.records, copy.mark)
        log.info(
            "%s: partition %d seeded from the broker's table copy (%d records at offset %d)",
            self.topic, partition, len(copy.records), copy.mark.applied,
        )  # fmt: skip

    def forget_loaded(self, partition: int) -> None:
        """Drop what memory holds of an active partition: the recovery loads it again from
        the disk copy (``load_active``), as a partition new to this worker."""
        if partition in self._loaded:
            self._unload(partition)

    def partition_of(self, key: Any) -> int | None:
        """The changelog partition a key in memory was read from (None: not read from it)."""
        return self._key_partition.get(key)

    def _load(self, partition: int) -> int:
        if self.cache is not None:
            self._loaded.add(partition)
            return self.cache.load(partition)
        n = 0
        for key, value in self.db.items(partition):
            self.data[key] = value
            self._key_partition[key] = partition
            n += 1
        self._loaded.add(partition)
        return n

    def _unload(self, partition: int) -> None:
        if self.cache is not None:
            self.cache.unload(partition)
            self._loaded.discard(partition)
            return
        for key in [k for k, p in self._key_partition.items() if p == partition]:
            self.data.pop(key, None)
            del self._key_partition[key]
        self._loaded.discard(partition)

    def _put_all(self, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        if self.cache is not None:
            self.cache.read_into(partition, records)
            return
        for key, value in records:
            self._put(key, value, partition)

    def _put(self, key: bytes, value: bytes | None, partition: int) -> None:
        if value is None:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)
        else:
            self.data[key] = value
            self._key_partition[key] = partition

    # --- records arriving -----------------------------------------------------------------

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Faust's recovery path: an active partition's records, should any be left after
        ``catch_up`` (the standbys' come through ``apply_records``)."""
        self.apply_records([event.message for event in batch])

    def apply_records(self, messages: Iterable[Message]) -> None:
        """Records of this table's changelog, read by the consumer: onto the disk copy
        of a partition caught up (``catch_up``), and into the table if it is loaded. A
        partition not caught up is skipped: a later record on a copy with a hole would
        move its mark past the hole (its next ``catch_up`` reads the records again)."""
        by_partition: dict[int, list[Any]] = {}  # a changelog record always has a key
        for message in messages:
            by_partition.setdefault(message.partition, []).append(message)
        for partition, held in by_partition.items():
            if partition in self._held:
                self._apply_held(partition, held)

    def _apply_held(self, partition: int, messages: list[Any]) -> None:
        mark = self.db.mark(partition)
        if mark is not None:
            # Already on disk (read by ``catch_up`` since they were fetched): an older value
            # must not overwrite a newer one, nor the mark go back.
            messages = [m for m in messages if m.offset > mark.applied]
        if not messages:
            return
        last = messages[-1]
        sig = digest(last.key, last.value, round(last.timestamp * 1000))
        self.db.apply(
            partition,
            ((m.key, m.value) for m in messages),
            Mark(last.offset, last.offset, sig),
        )
        if partition in self._loaded:
            self._put_all(partition, [(m.key, m.value) for m in messages])

    def changing(self, leads: Iterable[LeadState]) -> None:
        """The worker is about to write these leads (changed in memory): its cache keeps
        them until the disk has them."""
        if self.cache is not None:
            self.cache.changing(leads)

    @property
    def change_seq(self) -> int:
        """The number of the cache's latest change: a write serialized now has them all."""
        return 0 if self.cache is None else self.cache.seq

    def persist_written(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        end: int,
        end_digest: bytes,
        seq: int = 0,
    ) -> None:
        """The worker's own write of ``records``, the last at offset ``end`` with digest
        ``end_digest``, serialized at the cache's change ``seq``, is on the broker: on disk
        too. Only for a partition caught up (the records before it are on disk)."""
        if self._db is None or partition not in self._held:
            return
        self._db.apply(partition, records, Mark(end, end, end_digest))
        if self.cache is not None:
            self.cache.written((key for key, _ in records), seq)


async def _seed(stores: list[DiskStore]) -> None:
    """Seed the partitions held without a disk copy of any table (an empty data dir, a
    partition new to it) from the broker's table copies, before the catch-up reads the
    changelogs from the disk copies' marks."""
    seeder = stores[0].seeder if stores else None
    if seeder is None:
        return
    actives, standbys = stores[0]._assigned()
    missing = {
        p
        for p in actives | standbys
        if all(s.db.mark(p) is None and p not in s._loaded for s in stores)
    }
    if not missing:
        return
    copies = await seeder(missing)
    for p, tables in copies.items():
        for store in stores:
            copy = tables.get(store.topic)
            if p in missing and copy is not None:
                store.seed(p, copy)
