"""A Kafka transport for Faust that never acks a message it did not process.

Faust's stream skips messages fetched under an older consumer generation (or while flow
control is paused during a rebalance) and still acks them, so their offsets can be committed
although nothing applied them: lost events. Here a skipped message is simply not acked; the
consumer seeks back to the committed offset (the log's first offset if there is none) after
the rebalance and reads it again.

That leaves holes in the acked offsets, and Faust's commit only refuses to pass a hole of
two or more messages at the head (``min(acked) - committed > 1``): a single unacked message
right after the committed offset would be committed past. ``_new_offset`` here commits only
a run that starts exactly at the committed offset.

Also: commit what was acked before a revoke drops Faust's bookkeeping of it, so that fewer
events are replayed by the partition's next owner (replays are harmless, only wasted work).
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

__all__ = ["ExactConsumer", "ExactTransport", "install"]

log = logging.getLogger(__name__)


class ExactConsumer(driver.Consumer):
    def ack(self, message: Message) -> bool:
        if not message.tracked:
            # Skipped by the stream before processing (stale generation, paused flow).
            return False
        return super().ack(message)

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if not acked:
            return None
        if committed is None:
            # Unknown start (never committed, not yet sought): a hole at the head cannot be
            # told from a start; perform_seek fills in the log's first offset.
            return None
        self._fill_gaps(tp, acked)
        acked.sort()
        if acked[0] > committed:
            return None  # the next message to commit is not processed yet
        return super()._new_offset(tp)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # A partition the group never committed starts at the log's first offset: that is
        # the "committed" offset the head-of-queue guard above compares with, and where it
        # is read again from. Faust seeks only partitions with a committed offset, so the
        # messages of such a partition skipped while the worker was not ready (fetched
        # before a rebalance, or during recovery) would never be read again.
        acking = self.app.topics.acking_topics
        unknown = [
            tp
            for tp in self.assignment()
            if tp.topic in acking and self._committed_offset.get(tp) is None
        ]
        if unknown:
            starts = {
                tp: offset
                for tp, offset in (await self.earliest_offsets(*unknown)).items()
                if self._committed_offset.get(tp) is None
            }
            self._committed_offset.update(starts)
            await self.seek_wait(starts)  # on the consumer's thread, as Faust's recovery does

    def _fill_gaps(self, tp: TP, acked: list[int]) -> None:
        """Offsets the broker never delivered (compaction, markers) count as done."""
        gaps = self._gap[tp]
        if not gaps:
            return
        top = max(acked)
        filled = [o for gap in sorted(gaps.overlap(0, top)) for o in range(gap.begin, gap.end)]
        if filled:
            acked.extend(filled)
            self._acked_index[tp].update(filled)
            gaps.chop(0, max(filled[-1], top + 1))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        try:
            await self.commit(revoked)
        except Exception as exc:  # a failed early commit only means a longer replay
            log.warning("commit before revoke failed: %r", exc)
        await super().on_partitions_revoked(revoked)


class ExactTransport(driver.Transport):
    Consumer: Any = ExactConsumer


def install() -> None:
    """Make ``kafka://`` URLs use this transport (idempotent)."""
    TRANSPORTS.aliases["kafka"] = f"{__name__}:ExactTransport"
    TRANSPORTS.aliases["aiokafka"] = f"{__name__}:ExactTransport"
