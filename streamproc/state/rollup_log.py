"""The periods' rollups: what forgotten leads left in the calendar periods, changelogged.

They go on the leads table's changelog, in the partition of the leads they came from,
under keys no lead id has: a lead's tombstone and the rollup that takes over its facts
are then in one partition, in order, and a new owner recovers both in one read.

- ``ROLLUP + partition + SEP + month``: a month record, everything the partition's
  forgotten leads left in that local month (``PartitionAggregates.archived_month``), and
  the number of the last eviction round it includes.
- ``EVICTING + partition``: the eviction round under way, one record (so written whole or
  not at all): its number, the ids of the leads it forgets and what they leave in the
  periods.

An eviction round writes its round record, then the leads' tombstones and the month
records it changed (numbered with the round), then a tombstone for the round record.
A crash anywhere in between leaves the recovery enough to be exact: a round record still
there is added to the month records older than it, and the leads it names are dropped
from the recovered state (their tombstones may not have been written), and the new owner
finishes the round (``RollupLog.flush``). Nothing is counted twice, nothing is lost.

No pickle: records are the partials' summary encoding (JSON head, float64 arrays) behind a
number, readable by any version that reads that encoding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from streamproc.engine.aggregates import PartitionAggregates, Rollup
from streamproc.engine.lead_store import LeadStore
from streamproc.partials.codec import decode, encode
from streamproc.state.changelog import ChangelogWriter, Record

__all__ = ["EVICTING", "LEADS_PER_ROUND", "ROLLUP", "Recovered", "RollupLog", "is_rollup_key"]

log = logging.getLogger(__name__)

ROLLUP = b"\x00rollup\x00"
EVICTING = b"\x00evicting\x00"
SEP = b"\x00"
# Leads forgotten per round and partition: a round is one record (a Kafka record batch
# holds at most the producer's 512 KiB); 1,000 ids and their rollup are well below it.
LEADS_PER_ROUND = 1000


def month_key(partition: int, month: int) -> bytes:
    return ROLLUP + str(partition).encode() + SEP + str(month).encode()


def round_key(partition: int) -> bytes:
    return EVICTING + str(partition).encode()


def is_rollup_key(key: object) -> bool:
    return isinstance(key, bytes) and (key.startswith(ROLLUP) or key.startswith(EVICTING))


def _number(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def encode_month(seq: int, rollup: Rollup) -> bytes:
    return _number(seq) + encode(rollup)


def encode_round(seq: int, leads: Iterable[str], delta: Rollup) -> bytes:
    ids = "\n".join(leads).encode()
    return _number(seq) + len(ids).to_bytes(4, "big") + ids + encode(delta)


def _rollup(raw: bytes) -> Rollup:
    return decode(raw)


@dataclass(slots=True)
class _Round:
    seq: int
    leads: list[str]
    delta: Rollup


@dataclass(slots=True)
class Recovered:
    """The rollup records a recovery found, by partition: a month's as its number and its
    encoded rollup, decoded only when restored (``RollupLog.recovered``)."""

    months: dict[int, dict[int, tuple[int, bytes]]] = field(default_factory=dict)
    rounds: dict[int, _Round] = field(default_factory=dict)

    def take(self, store: LeadStore) -> None:
        """Move the rollup records out of the recovered ``store`` (raw bytes by key)."""
        for key in [k for k in store.raw_records() if is_rollup_key(k)]:
            raw = store.pop(key)
            if not raw:
                continue  # a tombstone
            if key.startswith(EVICTING):
                partition = int(key[len(EVICTING) :])
                size = int.from_bytes(raw[8:12], "big")
                ids = raw[12 : 12 + size].decode()
                self.rounds[partition] = _Round(
                    int.from_bytes(raw[:8], "big"),
                    ids.split("\n") if ids else [],
                    _rollup(raw[12 + size :]),
                )
            else:
                partition_s, month_s = key[len(ROLLUP) :].split(SEP)
                per_month = self.months.setdefault(int(partition_s), {})
                per_month[int(month_s)] = (int.from_bytes(raw[:8], "big"), raw[8:])


@dataclass(slots=True)
class _Pending:
    """A round to write: its number, the leads it forgets, what they leave, the months to
    rewrite and to delete, and whether its round record must be written."""

    seq: int
    leads: list[str] = field(default_factory=list)
    delta: Rollup = field(default_factory=dict)
    months: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    needs_record: bool = True


class RollupLog:
    """Changelogs the rollups of the partitions this worker owns (see the module)."""

    def __init__(self, writer: ChangelogWriter) -> None:
        self.writer = writer
        self._seq: dict[int, int] = {}  # partition -> number of its last round
        self._pending: dict[int, _Pending] = {}

    @property
    def unfinished(self) -> bool:
        """A round not written to its end (a failed write, a recovered round): no lead is
        forgotten before it is (``flush``), so that a retry writes the same round."""
        return bool(self._pending)

    def recovered(
        self,
        found: Recovered,
        partitions: Iterable[int],
        leads: MutableMapping[Any, Any],
    ) -> dict[int, Iterator[Rollup]]:
        """For the newly owned ``partitions``: the rollups to restore (month records, and
        a round still there added to the months it is newer than), each decoded as it is
        taken (once). The leads such a round forgot are dropped from ``leads``; the round is
        finished by the next ``flush``."""
        out: dict[int, Iterator[Rollup]] = {}
        for p in partitions:
            months = found.months.get(p, {})
            seq = max((s for s, _ in months.values()), default=0)
            self._pending.pop(p, None)
            pending = found.rounds.get(p)
            out[p] = _restored(months, pending)
            if pending is not None:
                for lead_id in pending.leads:
                    leads.pop(lead_id, None)
                touched = {
                    int(w) for per in pending.delta.values() for ws in per.values() for w in ws
                }
                self._pending[p] = _Pending(
                    pending.seq, list(pending.leads), months=touched, needs_record=False
                )
                seq = max(seq, pending.seq)
                log.info("partition %d: finishing eviction round %d", p, pending.seq)
            self._seq[p] = seq
        return out

    def keep_only(self, partitions: Iterable[int]) -> None:
        """A partition that moved away is its new owner's to finish."""
        keep = set(partitions)
        for p in [p for p in self._pending if p not in keep]:
            del self._pending[p]

    def take(
        self, parts: Mapping[int, PartitionAggregates], forgotten: Mapping[int, list[str]]
    ) -> None:
        """Queue a round per partition: the leads just forgotten (``Engine.evict``) and
        what the partition's archive got and pruned since the last round."""
        for p, part in parts.items():
            delta, months, dropped = part.take_archived()
            leads = forgotten.get(p, [])
            if not (delta or months or dropped or leads):
                continue
            pending = self._pending.get(p)
            if pending is None:
                self._seq[p] = self._seq.get(p, 0) + 1
                pending = self._pending[p] = _Pending(self._seq[p])
            elif delta or leads:
                raise RuntimeError("leads forgotten while a round is unfinished")
            pending.leads += leads
            pending.delta = delta or pending.delta
            pending.months |= months
            pending.dropped |= dropped

    async def flush(self, parts: Mapping[int, PartitionAggregates]) -> None:
        """Write the queued rounds: round records first, then the rest (see the module)."""
        for p in [p for p in self._pending if p not in parts]:
            del self._pending[p]
        pending = dict(self._pending)
        if not pending:
            return
        await self.writer.write(
            (round_key(p), encode_round(r.seq, r.leads, r.delta), p)
            for p, r in pending.items()
            if r.needs_record and (r.leads or r.delta)
        )
        records: list[Record] = []
        for p, r in pending.items():
            records += [(lead_id.encode(), None, p) for lead_id in r.leads]
            part = parts[p]
            for month in sorted(r.months - r.dropped):
                rollup = part.archived_month(month)
                value = encode_month(r.seq, rollup) if rollup else None
                records.append((month_key(p, month), value, p))
            records += [(month_key(p, month), None, p) for month in sorted(r.dropped)]
            records.append((round_key(p), None, p))
        await self.writer.write(records)
        for p in pending:
            if self._pending.get(p) is pending[p]:
                del self._pending[p]


def _restored(months: Mapping[int, tuple[int, bytes]], pending: _Round | None) -> Iterator[Rollup]:
    """The month records' rollups one at a time, then the unfinished round's part newer
    than them: decoded all at once, a year's 48 month records (1.1 MB) were ~57 MiB of
    objects held beside the archive they were restored into (100,000 leads, the periods
    bench's take-over)."""
    for _, raw in months.values():
        yield _rollup(raw)
    if pending is not None:
        yield _newer_than(pending, months)


def _newer_than(pending: _Round, months: Mapping[int, tuple[int, bytes]]) -> Rollup:
    """The round's rollup, less the months whose record already includes it."""
    out: Rollup = {}
    for family, per_labels in pending.delta.items():
        for labels, per_window in per_labels.items():
            for window, acc in per_window.items():
                record = months.get(int(window))
                if record is None or record[0] < pending.seq:
                    out.setdefault(family, {}).setdefault(labels, {})[window] = acc
    return out
