"""Which fetched message the consumer may hand to the streams: the next offset per partition.

Faust's fetch loop keeps a per-partition "read offset" that a seek resets and each delivery
sets, drops a message below it as already read, and counts a jump past it as a gap the
commit treats as done. A fetch batch handed out before a seek but delivered after it (or a
delivery that straddles the seek) sets that offset past the seek's target: the messages read
again are dropped, and the jump is committed past. Events lost (bug 9 in
docs/reliability.md). The cursor here keeps the same bookkeeping with the seeks in view:

- a message at the next offset is delivered;
- one below it was delivered since the last seek (or lies below the seek's target): skipped;
- one past it is stale if a seek happened since its batch was fetched: the partition is
  sought back to the next offset and read again in order;
- one past it in a batch fetched after the last seek is sought back too, once: it is a real
  gap (compaction, transaction markers) only if the fetch from the next offset jumps to it
  again. A position the consumer did not set (seen in the join/leave scenario: a fetch from
  320 right after a seek to 126) is thus never committed past;
- a delivery moves the next offset only if no seek happened while it was under way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from faust.types import TP

__all__ = ["DeliveryCursor", "Verdict"]


class Verdict(Enum):
    DELIVER = "deliver"
    GAP = "gap"  # deliver; the offsets skipped before it were never in the log
    REPEAT = "repeat"  # skip: already delivered since the last seek, or below its target
    STALE = "stale"  # skip and seek back: fetched before a seek that moved the partition
    JUMP = "jump"  # skip and seek back, to check that the offsets jumped over are not there


class DeliveryCursor:
    """Next offset to deliver per partition, and a count of seeks to date the batches."""

    def __init__(self) -> None:
        self._next: dict[TP, int] = {}
        #: Jumps (next offset, offset jumped to) sought back to be checked.
        self._checking: dict[TP, tuple[int, int]] = {}
        #: Bumped when a seek starts and when it is done: a batch fetched, or a delivery
        #: begun, at an older count may predate the seek's target.
        self.seeks = 0

    def next(self, tp: TP) -> int | None:
        return self._next.get(tp)

    def seeking(self) -> None:
        self.seeks += 1

    def sought(self, positions: Mapping[TP, int]) -> None:
        """The seek is done. Counted again: a delivery that began before this point must
        not move the next offset past the target (it did, when only ``seeking`` counted)."""
        self._next.update(positions)
        self.seeks += 1

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._next.pop(tp, None)
            self._checking.pop(tp, None)

    def judge(self, tp: TP, offset: int, seeks_at_fetch: int) -> Verdict:
        expected = self._next.get(tp)
        if expected is None or offset == expected:
            return Verdict.DELIVER
        if offset < expected:
            return Verdict.REPEAT
        if self.seeks != seeks_at_fetch:
            return Verdict.STALE
        if self._checking.get(tp) == (expected, offset):
            del self._checking[tp]
            return Verdict.GAP
        self._checking[tp] = (expected, offset)
        return Verdict.JUMP

    def delivered(self, tp: TP, offset: int, seeks_before: int) -> None:
        """``seeks_before``: the count when the delivery began. A seek meanwhile set the
        next offset to its target; the message is read again from there if it lies past."""
        if self.seeks == seeks_before:
            self._next[tp] = offset + 1
