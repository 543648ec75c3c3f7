"""The leads in memory: a bounded cache of the hot ones over the disk copy of their changelog.

Every lead of an active partition is on disk (``state.disk``, once the broker has its
latest write: ``DiskStore.persist_written``); memory holds at most
``STREAMPROC_LEAD_CACHE_SIZE`` of them, the most recently used, plus those changed and not
on disk yet. A lead not in memory is read from disk at its next event, as its changelog
bytes (decoded at its first read, as after a restart). Without the cache a worker held
every lead it ever kept (~400 bytes each in memory: 1,000,000 leads were ~1 GiB of RSS).

Exactness rests on three rules:

- a lead changed in memory stays there until the disk has that change: ``changing``
  (called by the lead changelog before a write) marks it with a number, and the disk copy's
  write (``written``) clears the marks not newer than what that write serialized;
- a lead deleted (evicted past retention) reads as absent until its tombstone is on disk,
  not as its older state from disk;
- leads leave memory only in ``trim``, which the worker calls under its state lock's
  writer side: no batch or alert round then holds a lead object across an await, so no
  one keeps changing an object the cache no longer holds.

Records whose key starts with a zero byte (dead-letter marks, the periods' rollups) are
no leads: they are read into memory when a partition is loaded (``load``) and decoded
from there by the recovery, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from streamproc.engine.lead import LeadState
from streamproc.engine.lead_store import LeadStore, drop_leads_outside

if TYPE_CHECKING:
    from streamproc.state.disk import StateDB

__all__ = ["RECORD_PREFIX", "LeadCache"]

RECORD_PREFIX = b"\x00"  # keys of the leads table's other records (dead marks, rollups)
_ABSENT = object()


class LeadCache(LeadStore):
    """The leads table's keys: hot ones in memory, the others on disk by partition."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hot: dict[Any, Any] = {}  # in use order, the least recently used first
        self._db: Callable[[], StateDB] | None = None  # ``attach``: the table's disk copy
        self.loaded: set[int] = set()  # the partitions read from disk (active ones)
        self._held: Callable[[], Container[int]] = frozenset  # partitions whose copy is current
        self._seq = 0  # numbers the changes, for ``written``
        self._dirty: dict[str, tuple[int, int]] = {}  # changed lead -> (change, partition)
        self._gone: dict[str, tuple[int, int]] = {}  # deleted, tombstone not on disk yet
        self._records: dict[bytes, int] = {}  # the other records in memory -> partition
        self.disk_reads = 0  # leads read back from disk (``streamproc_lead_cache_reads_total``)

    def attach(self, db: Callable[[], StateDB], held: Callable[[], Container[int]]) -> None:
        """The disk copy (opened again after a stop: a SIGTERM's snapshot reads leads after
        Faust closed the tables), and which partitions' copy is at the changelog's end."""
        self._db, self._held = db, held

    @property
    def db(self) -> StateDB | None:
        return None if self._db is None else self._db()

    # --- the mapping ---------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        hot = self.hot
        value = hot.pop(key, _ABSENT)
        if value is not _ABSENT:
            hot[key] = value  # now the most recently used
            return value
        if key in self._gone or not isinstance(key, str):
            return default
        found = self._read(key)
        if found is None:
            return default
        hot[key] = found
        return found

    def _read(self, lead_id: str) -> LeadState | None:
        db = self.db
        if db is None:
            return None
        raw_key = lead_id.encode()
        for partition in self.loaded:
            raw = db.get(partition, raw_key)
            if raw is not None:
                self.disk_reads += 1
                return LeadState.undecoded(lead_id, partition, raw)
        return None

    def __contains__(self, key: object) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __setitem__(self, key: Any, value: Any) -> None:
        self.hot.pop(key, None)
        self.hot[key] = value
        if isinstance(value, LeadState):
            self._seq += 1
            self._dirty[key] = (self._seq, value.partition)
            self._gone.pop(key, None)

    def __delitem__(self, key: Any) -> None:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        del self.hot[key]
        self._records.pop(key, None)
        if isinstance(value, LeadState):
            self._seq += 1
            self._gone[key] = (self._seq, value.partition)
            self._dirty.pop(key, None)

    def __iter__(self) -> Iterator[Any]:
        """Every key: those in memory, then the leads on disk only."""
        yield from list(self.hot)
        for lead in self._cold(self.loaded):
            yield lead.lead_id

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def peek(self, lead_id: str) -> LeadState | None:
        value = self.hot.get(lead_id)
        if isinstance(value, LeadState):
            return value
        return None if lead_id in self._gone else self._read(lead_id)

    # --- scans ---------------------------------------------------------------------------

    def scan(self, partitions: Container[int]) -> Iterator[LeadState]:
        for value in list(self.hot.values()):
            if isinstance(value, LeadState) and value.partition in partitions:
                yield value
        yield from self._cold([p for p in self.loaded if p in partitions])

    def _cold(self, partitions: Iterable[int]) -> Iterator[LeadState]:
        """The leads of ``partitions`` on disk and not in memory (nor deleted), undecoded."""
        db = self.db
        if db is None:
            return
        for partition in sorted(partitions):
            for raw_key, raw in db.items(partition):
                if raw_key.startswith(RECORD_PREFIX):
                    continue
                lead_id = raw_key.decode()
                if lead_id not in self.hot and lead_id not in self._gone:
                    yield LeadState.undecoded(lead_id, partition, raw)

    def activity(self) -> Iterator[tuple[str, float]]:
        for value in list(self.hot.values()):
            if isinstance(value, LeadState):
                yield value.lead_id, value.last_ts
        db = self.db
        if db is None:
            return
        for partition in sorted(self.loaded):
            for raw_key, raw in db.items(partition):
                if raw_key.startswith(RECORD_PREFIX):
                    continue
                lead_id = raw_key.decode()
                if lead_id not in self.hot and lead_id not in self._gone:
                    yield lead_id, LeadState.last_ts_of(raw)

    def keep_only(self, partitions: Container[int]) -> list[str]:
        gone = drop_leads_outside(self.hot, partitions)
        for marks in (self._dirty, self._gone):
            for key in [k for k, (_, p) in marks.items() if p not in partitions]:
                del marks[key]
        return gone

    def raw_records(self) -> list[Any]:
        return [key for key, value in self.hot.items() if not isinstance(value, LeadState)]

    # --- the disk copy -------------------------------------------------------------------

    def load(self, partition: int) -> int:
        """A partition became active: its other records into memory (its leads stay on
        disk until read); returns how many."""
        self.loaded.add(partition)
        n = 0
        if self.db is not None:
            for key, value in self.db.items(partition, RECORD_PREFIX):
                self.hot[key] = value
                self._records[key] = partition
                n += 1
        return n

    def unload(self, partition: int) -> None:
        """A partition moved away: nothing of it stays in memory."""
        self.loaded.discard(partition)
        self.keep_only(set(self.loaded))
        for key in [k for k, p in self._records.items() if p == partition]:
            del self._records[key]
            self.hot.pop(key, None)

    def read_into(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Records the changelog reader wrote to disk for a loaded partition: a lead is read
        from disk again at its next use, another record is kept in memory as it came."""
        hot = self.hot
        for key, value in records:
            if key.startswith(RECORD_PREFIX):
                if value is None:
                    hot.pop(key, None)
                    self._records.pop(key, None)
                else:
                    hot[key] = value
                    self._records[key] = partition
            else:
                lead_id = key.decode()
                hot.pop(lead_id, None)
                self._dirty.pop(lead_id, None)
                self._gone.pop(lead_id, None)

    @property
    def seq(self) -> int:
        """The number of the latest change (``written`` takes it from a write)."""
        return self._seq

    def changing(self, leads: Iterable[LeadState]) -> None:
        """These leads changed in memory and are about to be written: kept in memory until
        the disk has them."""
        for lead in leads:
            self._seq += 1
            self._dirty[lead.lead_id] = (self._seq, lead.partition)

    def written(self, keys: Iterable[bytes], seq: int) -> None:
        """Records serialized when the latest change was ``seq`` are on disk: their leads'
        marks up to it are cleared."""
        dirty, gone = self._dirty, self._gone
        for key in keys:
            if key.startswith(RECORD_PREFIX):
                continue
            lead_id = key.decode()
            for marks in (dirty, gone):
                mark = marks.get(lead_id)
                if mark is not None and mark[0] <= seq:
                    del marks[lead_id]

    @property
    def over(self) -> int:
        """How many more leads memory holds than the cache's capacity."""
        return len(self.hot) - self.capacity

    def trim(self) -> int:
        """Drop the least recently used leads beyond the capacity that the disk has as they
        are (see the module for when this may run); returns how many went."""
        excess = self.over
        if excess <= 0:
            return 0
        held, dirty, hot = self._held(), self._dirty, self.hot
        out: list[Any] = []
        for key, value in hot.items():
            if len(out) == excess:
                break
            if (
                isinstance(value, LeadState)
                and key not in dirty
                and value.partition in held
                and value.partition in self.loaded
            ):
                out.append(key)
        for key in out:
            del hot[key]
        return len(out)
