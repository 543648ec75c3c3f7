"""What a worker keeps of its aggregates and tables across a stop: each partition's
snapshot (``state.snapshots``), written to the data dir and published to the broker
(``kafka.snapshot_topic``) when it stops cleanly, and loaded (the data dir's, else the
broker's) when it takes the partition over, instead of deriving the aggregates from every
lead (~100 us a lead); and each partition's table copy (``state.table_copies``), published
after the snapshot, which a worker without a disk copy of the partition seeds its own
from. Why that is exact: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from streamproc.config import Settings
from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.sla_watch import Deadline
from streamproc.engine.windows import WindowClock
from streamproc.kafka.snapshot_topic import (
    AGGREGATES,
    COPY,
    Named,
    Published,
    SnapshotParts,
    fetch_snapshot_parts,
    fetch_snapshots,
    latest_named,
    publish_copy,
    publish_snapshot,
    same_parts,
)
from streamproc.state import table_copies
from streamproc.state.snapshots import Decoded, Marks, Snapshot, Snapshots
from streamproc.state.store import DiskStore
from streamproc.state.table_copies import TableCopy

__all__ = ["IO_SECONDS", "SnapshotKeeper"]

log = logging.getLogger(__name__)
# The broker's copy is a shortcut, never waited for long: a taker without it derives the
# aggregates, as exact. 100,000 leads: 3.6 MB, 12 records.
IO_SECONDS = 10.0
# What a fetch ahead holds at most before it leaves the other partitions to the recovery:
# it fetches partitions the worker may not get (a worker joining a group of N gets ~1/N).
# 100,000 leads on 4 partitions: 11 MB of snapshots and table copies.
AHEAD_MAX_BYTES = 64 << 20


def _at_once() -> None:
    """An ahead thread's ``after``: start at once."""


class _Prefetched(NamedTuple):
    """The broker's snapshots and table copies fetched while a join waits."""

    parts: tuple[int, ...]  # the parts fetched (``AGGREGATES``, ``COPY``)
    named: dict[int, Named | None]  # each partition's latest snapshot as fetched
    snapshots: dict[int, bytes]  # partition -> its aggregates snapshot
    decoded: dict[int, Decoded]  # those snapshots decoded
    copies: dict[int, dict[str, TableCopy]]  # partition -> changelog topic -> its copy

    def records(self, topic: str) -> tuple[dict[bytes, bytes], set[int]]:
        """The records of one table's copies, and the partitions they are of."""
        tables = {p: copy[topic] for p, copy in self.copies.items() if topic in copy}
        return {k: v for copy in tables.values() for k, v in copy.records}, set(tables)


class _Prefetch:
    """One fetch ahead of ``partitions``, in a thread of its own; ``result`` once it is done
    (None if it failed). ``partitions`` loses those a recovery has taken."""

    def __init__(self, partitions: set[int], target: Callable[[], _Prefetched | None]) -> None:
        self.partitions = partitions
        self.result: _Prefetched | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.name = "snapshots-ahead"
        self.thread.start()

    def _run(self, target: Callable[[], _Prefetched | None]) -> None:
        self.result = target()

    def wait(self) -> _Prefetched | None:
        self.thread.join()
        return self.result


class SnapshotKeeper:
    """The snapshots of one worker: its data dir's, and the broker's (``topic`` None: the
    deployment has no snapshots topic). ``stores``: the disk stores of every table, whose
    databases it closes after the last snapshot (``DiskStore.closed_by_owner``);
    ``derived``: the tables' the aggregates derive from (leads, customers);
    ``producer``: the started aiokafka producer to publish with."""

    def __init__(
        self,
        settings: Settings,
        stores: Callable[[], Sequence[DiskStore]],
        derived: Callable[[], Sequence[DiskStore]],
        producer: Callable[[], Any],
        topic: str | None,
    ) -> None:
        self.settings = settings
        self.files = Snapshots(settings.data_dir, settings)
        self.topic = topic
        self._stores = stores
        self._derived = derived
        self._producer = producer
        # Aggregates snapshots fetched with the table copies (``seed``), for the recovery
        # that follows (``fetch``): one fetch less, ~0.45 s on tansu.
        self._fetched: dict[int, bytes] = {}
        # The data dir's snapshots decoded while the first join waits (``decode_ahead``),
        # with the marks they were checked against, for the first ``load``.
        self._ahead: dict[int, tuple[Marks, Snapshot]] = {}
        self._decoding: threading.Thread | None = None
        # The broker's snapshots (and table copies) fetched while a join waits
        # (``fetch_ahead``), for the recovery that follows (``seed``, ``fetch``).
        self._prefetch: _Prefetch | None = None
        self._decoded: dict[int, Decoded] = {}  # of the snapshots fetched ahead, for ``load``

    def marks(self, partition: int) -> Marks:
        """The disk marks of the changelog partitions the aggregates derive from."""
        return {store.topic: store.db.mark(partition) for store in self._derived()}

    def close_stores(self) -> None:
        """Faust stops the tables before the SIGTERM hook (seen in every log), which still
        reads their marks and records: their databases close here."""
        for store in self._stores():
            store.close()

    # --- a clean stop ----------------------------------------------------------------------

    def write(
        self,
        partitions: Mapping[int, PartitionAggregates],
        waiting: Mapping[int, Iterable[Deadline]],
    ) -> dict[int, bytes]:
        """Each partition's aggregates and SLA deadlines to the data dir, in one go (no
        await between a partition's marks and its aggregates); returns the snapshots."""
        started, written = time.monotonic(), {}
        try:
            for p, part in partitions.items():
                written[p] = self.files.write(p, part, self.marks(p), waiting.get(p, ()))
        except Exception:  # a restart derives them: slower, as exact
            log.warning("snapshots not written", exc_info=True)
            return {}
        log.info(
            "snapshots of partitions %s written (%d bytes) in %.2f s",
            sorted(written), sum(map(len, written.values())), time.monotonic() - started,
        )  # fmt: skip
        return written

    async def publish(self, written: Mapping[int, bytes]) -> dict[int, Published]:
        """The broker's copy, for a worker taking the partitions over without this data
        dir; best effort (a taker without it derives)."""
        if self.topic is None or not written:
            return {}
        started, producer, topic = time.monotonic(), self._producer(), self.topic
        sends = [publish_snapshot(producer, topic, p, data) for p, data in written.items()]
        try:
            async with asyncio.timeout(IO_SECONDS):
                published = dict(zip(written, await asyncio.gather(*sends), strict=True))
        except Exception as exc:  # any failure only costs the taker a rebuild
            log.warning("snapshots not published (%r): a taker derives them", exc)
            return {}
        log.info(
            "snapshots of partitions %s published (%d records) in %.2f s",
            sorted(published), sum(s.chunks + 1 for s in published.values()),
            time.monotonic() - started,
        )  # fmt: skip
        return published

    async def publish_copies(self, published: Mapping[int, Published]) -> None:
        """After the leave (no taker waits for them in a hand-over: the survivor has its
        standby's disk copy): each partition's table copy, after its snapshot, for a worker
        without a disk copy of it. Each is encoded in one go, so no write lands between
        its marks and its records. Best effort: a taker without it reads the changelog."""
        if self.topic is None or not published:
            return
        started, producer, topic = time.monotonic(), self._producer(), self.topic
        sent: dict[int, int] = {}  # partition -> bytes (none for one over the size limit)
        try:
            async with asyncio.timeout(IO_SECONDS):
                for p, snapshot in published.items():
                    dbs = {store.topic: store.db for store in self._stores()}
                    data = table_copies.encode(p, dbs)
                    if data is not None:
                        await publish_copy(producer, topic, p, data, snapshot)
                        sent[p] = len(data)
        except Exception as exc:  # any failure only costs the taker a changelog read
            log.warning("table copies not published (%r): a taker reads the changelog", exc)
            return
        log.info(
            "table copies of partitions %s published (%d bytes) in %.2f s",
            sorted(sent), sum(sent.values()), time.monotonic() - started,
        )  # fmt: skip

    # --- a take-over -----------------------------------------------------------------------

    def decode_ahead(self, clock: WindowClock, after: Callable[[], object] = _at_once) -> None:
        """Before the worker starts: decode the data dir's usable snapshots in a thread
        while the group's join waits (3 s on tansu), instead of after the assignment
        (100,000 leads: ~0.5 s of process time for the four). ``load`` uses them if the
        marks are still the same. Faust starts the app's tasks only after the first
        recovery: too late for this. The thread starts its work once ``after`` returns
        (the join requested: ``Topology.start_ahead``)."""
        partitions = self.files.partitions()
        if partitions:
            marks = {p: self.marks(p) for p in partitions}  # the databases: this thread
            self._decoding = threading.Thread(
                target=self._decode, args=(marks, clock, after), name="snapshots-ahead", daemon=True
            )
            self._decoding.start()

    def _decode(
        self, marks: Mapping[int, Marks], clock: WindowClock, after: Callable[[], object]
    ) -> None:
        after()
        started, now = time.monotonic(), time.time()
        try:
            found = ((p, m, self.files.peek(p, m, clock, now)) for p, m in marks.items())
            self._ahead = {p: (m, snapshot) for p, m, snapshot in found if snapshot is not None}
        except Exception:  # the take-over reads them again
            log.warning("snapshots not decoded ahead", exc_info=True)
            return
        log.info(
            "snapshots of partitions %s decoded ahead in %.2f s",
            sorted(self._ahead), time.monotonic() - started,
        )  # fmt: skip

    def fetch_ahead(
        self,
        partitions: Iterable[int],
        clock: WindowClock,
        parts: tuple[int, ...] = (AGGREGATES,),
        after: Callable[[], object] = _at_once,
    ) -> None:
        """Fetch the broker's latest ``parts`` of ``partitions`` and decode them in a thread
        while the group's join waits (3 s on tansu), instead of after the assignment: at
        the start, the snapshots and table copies of the partitions without a disk copy
        (100,000 leads: 11 MB fetched in ~0.6 s); in a rebalance, the snapshots of the
        standby partitions, which a worker stopping cleanly published before it left. The
        recovery that follows takes those still the latest (``_take_prefetched``). The
        thread starts once ``after`` returns."""
        wanted = sorted(partitions)
        if self.topic is not None and wanted:
            marks = {p: self.marks(p) for p in wanted}  # the databases: this thread
            fetch = partial(self._prefetched, marks, clock, parts, after)
            self._prefetch = _Prefetch(set(wanted), fetch)

    def _prefetched(
        self,
        marks: Mapping[int, Marks],
        clock: WindowClock,
        parts: tuple[int, ...],
        after: Callable[[], object],
    ) -> _Prefetched | None:
        after()
        started = time.monotonic()
        try:
            fetched = asyncio.run(
                asyncio.wait_for(self._fetch_parts(list(marks), parts, AHEAD_MAX_BYTES), IO_SECONDS)
            )
            snapshots, copies = self._split(fetched)
            now = time.time()
            # Not one taken before the disk copy: a standby's partition whose owner stopped
            # long ago (every rebalance would decode it, ~0.3 s and its memory, for nothing).
            decoded = {
                p: self.files.decode_published(data, p, clock, now, marks[p])
                for p, data in snapshots.items()
            }
        except Exception as exc:  # the recovery fetches them again
            log.warning("snapshots not fetched ahead (%r)", exc)
            return None
        log.info(
            "snapshots of partitions %s fetched ahead (table copies of partitions %s with "
            "them) in %.2f s",
            sorted(snapshots), sorted(copies), time.monotonic() - started,
        )  # fmt: skip
        found = {p: d for p, d in decoded.items() if d is not None}
        return _Prefetched(parts, fetched.named, snapshots, found, copies)

    def prefetched_records(self, topic: str) -> tuple[dict[bytes, bytes], set[int]]:
        """The records of one table in the copies fetched ahead, and their partitions
        (none if there are none); waits for the fetch (a thread of its own: the partials'
        view merged ahead)."""
        prefetch = self._prefetch
        prefetched = None if prefetch is None else prefetch.wait()
        return ({}, set()) if prefetched is None else prefetched.records(topic)

    async def fetch(self, partitions: Iterable[int]) -> dict[int, bytes]:
        """The broker's snapshots of ``partitions`` without a usable one in the data dir
        (a file left from before another worker's stop is stale: the broker's may not be)."""
        if self._decoding is not None:  # ``load`` comes next: it uses what it decodes
            decoding, self._decoding = self._decoding, None
            await asyncio.to_thread(decoding.join)
        wanted = [p for p in partitions if not self.files.usable(p, self.marks(p))]
        fetched, self._fetched = self._fetched, {}
        checked, ahead, _ = await self._take_prefetched(set(wanted), (AGGREGATES,))
        if self.topic is None or not wanted:
            return {}
        found = {p: data for p, data in (fetched | ahead).items() if p in wanted}
        wanted = [p for p in wanted if p not in found and p not in checked]
        if not wanted:
            return found
        started = time.monotonic()
        try:
            async with asyncio.timeout(IO_SECONDS):
                found |= await fetch_snapshots(self.settings, self.topic, wanted)
        except Exception as exc:  # any failure only costs a rebuild
            log.warning("snapshots not fetched (%r): derived", exc)
            return {}
        log.info(
            "snapshots of partitions %s fetched from the broker (%d bytes) in %.2f s",
            sorted(found), sum(map(len, found.values())), time.monotonic() - started,
        )  # fmt: skip
        return found

    async def seed(self, partitions: set[int]) -> dict[int, dict[str, TableCopy]]:
        """The broker's table copies of ``partitions`` (``DiskStore.seeder``), and their
        aggregates snapshots, kept for the recovery's ``fetch``: those fetched ahead that
        are still the latest, the others fetched now."""
        if self.topic is None:
            return {}
        started = time.monotonic()
        checked, snapshots, copies = await self._take_prefetched(partitions, (AGGREGATES, COPY))
        wanted = sorted(partitions - checked)
        try:
            async with asyncio.timeout(IO_SECONDS):
                fetched = await self._fetch_parts(wanted)
        except Exception as exc:  # any failure only costs a changelog read
            log.warning("table copies not fetched (%r): the changelog is read", exc)
            fetched = SnapshotParts({}, {})
        more_snapshots, more_copies = self._split(fetched)
        self._fetched = snapshots | more_snapshots
        log.info(
            "table copies of partitions %s fetched from the broker (%s; snapshots of "
            "partitions %s with them) in %.2f s",
            sorted(copies | more_copies),
            f"{sorted(copies)} fetched ahead" if copies else "none fetched ahead",
            sorted(self._fetched), time.monotonic() - started,
        )  # fmt: skip
        return copies | more_copies

    async def _take_prefetched(
        self, partitions: set[int], parts: tuple[int, ...]
    ) -> tuple[set[int], dict[int, bytes], dict[int, dict[str, TableCopy]]]:
        """(The partitions of ``partitions`` whose latest snapshot on the broker still has
        the ``parts`` fetched ahead: nothing to fetch for them again; what was fetched of
        them ahead, where that snapshot is still the latest.) Each partition is taken once;
        a fetch still running, or none of these partitions, is not waited for."""
        prefetch = self._prefetch
        if prefetch is None or not partitions & prefetch.partitions:
            return set(), {}, {}
        if prefetch.thread.is_alive():  # not done within the join (a fast one, on Kafka)
            self._prefetch = None  # fetched now, only what the worker got
            return set(), {}, {}
        prefetched = prefetch.result
        taken, prefetch.partitions = (
            partitions & prefetch.partitions,
            prefetch.partitions - partitions,
        )
        if prefetched is None or self.topic is None:
            return set(), {}, {}
        asked = sorted(taken & set(prefetched.named))
        try:
            async with asyncio.timeout(IO_SECONDS):
                latest = await latest_named(self.settings, self.topic, asked)
        except Exception as exc:  # fetched again
            log.warning("snapshots fetched ahead not checked (%r)", exc)
            return set(), {}, {}
        before = prefetched.named
        same = {p for p in asked if same_parts(before[p], latest.get(p), prefetched.parts)}
        # Taken out, so that the prefetch holds nothing the recovery has (the copies seeded
        # into the disk copy, then loaded from it, were held twice until its end).
        snapshots = {p: prefetched.snapshots.pop(p) for p in taken & prefetched.snapshots.keys()}
        decoded = {p: prefetched.decoded.pop(p) for p in taken & prefetched.decoded.keys()}
        copies = {p: prefetched.copies.pop(p) for p in taken & prefetched.copies.keys()}
        self._decoded |= {p: d for p, d in decoded.items() if p in same}
        return (
            same if set(parts) <= set(prefetched.parts) else set(),
            {p: data for p, data in snapshots.items() if p in same},
            {p: copy for p, copy in copies.items() if p in same},
        )

    async def _fetch_parts(
        self,
        partitions: list[int],
        parts: tuple[int, ...] = (AGGREGATES, COPY),
        max_bytes: int | None = None,
    ) -> SnapshotParts:
        assert self.topic is not None
        return await fetch_snapshot_parts(self.settings, self.topic, partitions, parts, max_bytes)

    @staticmethod
    def _split(
        fetched: SnapshotParts,
    ) -> tuple[dict[int, bytes], dict[int, dict[str, TableCopy]]]:
        """The aggregates snapshots and the decoded table copies of what was fetched."""
        snapshots = {p: got[AGGREGATES] for p, got in fetched.found.items() if AGGREGATES in got}
        copies = {}
        for p, got in fetched.found.items():
            if COPY in got:
                try:
                    copies[p] = table_copies.decode(got[COPY], p)
                except table_copies.CopyError as exc:
                    log.warning("partition %d: the broker's table copy not used (%s)", p, exc)
        return snapshots, copies

    def load(
        self,
        partitions: Iterable[int],
        clock: WindowClock,
        now: float,
        published: Mapping[int, bytes],
    ) -> dict[int, Snapshot]:
        """The usable snapshots of ``partitions`` (the data dir's, else ``published``),
        their aggregates pruned to ``now``; each data dir file is deleted once read."""
        loaded, ahead, self._ahead = {}, self._ahead, {}
        # The recovery's last step: what was fetched ahead for it and not taken goes.
        broker_decoded, self._decoded, self._prefetch = self._decoded, {}, None
        for p in sorted(partitions):
            marks, decoded = ahead.get(p, (None, None))
            if decoded is not None and marks == self.marks(p):
                self.files.path(p).unlink(missing_ok=True)  # taken, as ``take`` does
                snapshot: Snapshot | None = decoded
            else:
                snapshot = self.files.take(
                    p, self.marks(p), clock, now, published.get(p), broker_decoded.get(p)
                )
            if snapshot is not None:
                snapshot.aggregates.prune(now)
                loaded[p] = snapshot
        return loaded
