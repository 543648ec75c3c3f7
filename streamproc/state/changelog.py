"""Table changelogs written by the worker itself: awaited, and ending where tansu says.

tansu answers "latest offset" with the base offset of the last record batch plus one, so
a recovering worker stops before the rest of a multi-record batch, or (keeping a partition
across two rebalances) finds it has read past that answer and dies of Faust's
``ConsistencyError``. A one-record batch after each write burst makes the answer exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Protocol, cast

import faust

from streamproc.kafka.app import Table
from streamproc.kafka.batch_send import BatchRecord, send_in_batches
from streamproc.kafka.changelog_reader import digest
from streamproc.state.store import DiskStore

__all__ = ["END_MARKER", "ChangelogWriter", "Record", "Snapshot"]

# A tombstone for a key no table holds: recovery deletes nothing.
END_MARKER = b"\x00streamproc-end-marker"


class Snapshot(Protocol):
    """A value serialized only when its turn to be appended comes (see ``write``)."""

    def dumps(self) -> bytes: ...


# key, value (None: tombstone), partition
Record = tuple[bytes, "bytes | Snapshot | None", int]


class ChangelogWriter:
    """Appends records to one table's changelog, in order, and awaits their delivery."""

    def __init__(self, table: Table) -> None:
        self.table = table
        # Several tasks write (batch handler, timers): a send can wait inside the producer,
        # so without this an older value could be appended after a newer one.
        self._enqueue = asyncio.Lock()
        # The write enqueued before this one has reached the disk copy (or failed): each
        # write is persisted after it, so the disk never takes an older value last.
        self._persisted: asyncio.Future[None] | None = None

    async def write(self, records: Iterable[Record]) -> None:
        """Append the records, await them, then end each partition written with a marker.

        Callers ack their input only after this returns, so no committed offset outruns
        the state it produced (Faust's own buffer flush may give up after 0.1 s)."""
        records = list(records)
        if not records:
            return
        app = cast(faust.App, self.table.app)  # an AppT: the worker's App
        topic = self.table.changelog_topic.get_topic_name()
        markers = [(END_MARKER, None, p) for p in {part for _, _, part in records}]
        # Stamped by us: the disk copy's mark names the last marker by its digest.
        stamp = int(time.time() * 1000)
        store = self.table.data
        async with self._enqueue:  # snapshot and append in one order
            seq = store.change_seq if isinstance(store, DiskStore) else 0
            serialized = [(key, _serialized(value), part) for key, value, part in records]
            sent = await send_in_batches(app, topic, serialized)
            # Queued at once, not after the data's round trip (one round trip less for
            # every batch of events): aiokafka sends a partition's batches in order, one
            # request at a time per broker, and puts a batch to retry back at the front.
            ends = await send_in_batches(app, topic, markers, timestamp_ms=stamp)
            before, self._persisted = self._persisted, asyncio.get_running_loop().create_future()
            persisted = self._persisted
        try:
            await asyncio.gather(*sent, *ends)
            if before is not None:
                await asyncio.wait([before])
            self._persist(serialized, [end.result() for end in ends], stamp, seq)
        finally:
            persisted.set_result(None)

    def _persist(
        self, serialized: list[BatchRecord], ends: list[Any], stamp: int, seq: int
    ) -> None:
        """Hand the delivered records to the table's disk copy, if it keeps one."""
        store = self.table.data
        if not isinstance(store, DiskStore):
            return
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, value, part in serialized:
            by_partition.setdefault(part, []).append((key, value))
        sig = digest(END_MARKER, None, stamp)
        for end in ends:  # RecordMetadata of each partition's marker
            records = [*by_partition.get(end.partition, ()), (END_MARKER, None)]
            store.persist_written(end.partition, records, end.offset, sig, seq)


def _serialized(value: bytes | Snapshot | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.dumps()
