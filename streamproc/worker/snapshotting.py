"""What a worker keeps of its aggregates across a stop: each partition's snapshot
(``state.snapshots``), written to the data dir and published to the broker
(``kafka.snapshot_topic``) when it stops cleanly, and loaded (the data dir's, else the
broker's) when it takes the partition over, instead of deriving the aggregates from every
lead (~100 us a lead). Why that is exact: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from streamproc.config import Settings
from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.sla_watch import Deadline
from streamproc.engine.windows import WindowClock
from streamproc.kafka.snapshot_topic import fetch_snapshots, publish_snapshot
from streamproc.state.snapshots import Marks, Snapshot, Snapshots
from streamproc.state.store import DiskStore

__all__ = ["IO_SECONDS", "SnapshotKeeper"]

log = logging.getLogger(__name__)
# The broker's copy is a shortcut, never waited for long: a taker without it derives the
# aggregates, as exact. 100,000 leads: 3.6 MB, 12 records.
IO_SECONDS = 10.0


class SnapshotKeeper:
    """The snapshots of one worker: its data dir's, and the broker's (``topic`` None: the
    deployment has no snapshots topic). ``stores``: the disk stores of the tables the
    aggregates derive from (leads, customers), whose databases it closes after the last
    snapshot (``DiskStore.closed_by_owner``); ``producer``: the started aiokafka producer
    to publish with."""

    def __init__(
        self,
        settings: Settings,
        stores: Callable[[], Sequence[DiskStore]],
        producer: Callable[[], Any],
        topic: str | None,
    ) -> None:
        self.settings = settings
        self.files = Snapshots(settings.data_dir, settings)
        self.topic = topic
        self._stores = stores
        self._producer = producer

    def marks(self, partition: int) -> Marks:
        """The disk marks of the changelog partitions the aggregates derive from."""
        return {store.topic: store.db.mark(partition) for store in self._stores()}

    def close_stores(self) -> None:
        """Faust stops the tables before the SIGTERM hook (seen in every log), which still
        reads their marks and leads: their databases close here."""
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

    async def publish(self, written: Mapping[int, bytes]) -> None:
        """The broker's copy, for a worker taking the partitions over without this data
        dir; best effort (a taker without it derives)."""
        if self.topic is None or not written:
            return
        started, producer, topic = time.monotonic(), self._producer(), self.topic
        sends = (publish_snapshot(producer, topic, p, data) for p, data in written.items())
        try:
            async with asyncio.timeout(IO_SECONDS):
                records = sum(await asyncio.gather(*sends))
        except Exception as exc:  # any failure only costs the taker a rebuild
            log.warning("snapshots not published (%r): a taker derives them", exc)
            return
        log.info(
            "snapshots of partitions %s published (%d records) in %.2f s",
            sorted(written), records, time.monotonic() - started,
        )  # fmt: skip

    # --- a take-over -----------------------------------------------------------------------

    async def fetch(self, partitions: Iterable[int]) -> dict[int, bytes]:
        """The broker's snapshots of ``partitions`` without a usable one in the data dir
        (a file left from before another worker's stop is stale: the broker's may not be)."""
        wanted = [p for p in partitions if not self.files.usable(p, self.marks(p))]
        if self.topic is None or not wanted:
            return {}
        started = time.monotonic()
        try:
            async with asyncio.timeout(IO_SECONDS):
                found = await fetch_snapshots(self.settings, self.topic, wanted)
        except Exception as exc:  # any failure only costs a rebuild
            log.warning("snapshots not fetched (%r): derived", exc)
            return {}
        log.info(
            "snapshots of partitions %s fetched from the broker (%d bytes) in %.2f s",
            sorted(found), sum(map(len, found.values())), time.monotonic() - started,
        )  # fmt: skip
        return found

    def load(
        self,
        partitions: Iterable[int],
        clock: WindowClock,
        now: float,
        published: Mapping[int, bytes],
    ) -> dict[int, Snapshot]:
        """The usable snapshots of ``partitions`` (the data dir's, else ``published``),
        their aggregates pruned to ``now``; each data dir file is deleted once read."""
        loaded = {}
        for p in sorted(partitions):
            snapshot = self.files.take(p, self.marks(p), clock, now, published.get(p))
            if snapshot is not None:
                snapshot.aggregates.prune(now)
                loaded[p] = snapshot
        return loaded
