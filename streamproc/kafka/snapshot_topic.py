"""The aggregates snapshots on the broker: a worker stopping cleanly publishes each
partition's snapshot (``state.snapshots``) beside its data dir's copy, so that the worker
taking the partition over (a survivor in a hand-over, a new worker with an empty data dir)
loads it instead of deriving the aggregates from every lead (~100 us a lead: ~5 s of a
50,000-lead hand-over, ~10 s of a 100,000-lead empty data dir).

One compacted topic, co-partitioned with the inputs: partition N's snapshot goes to its
partition N, as chunks under a broker's default record size limit (1 MB) and then an end
record naming them. Keys ``<N>:<i>`` and ``<N>:end``, so compaction keeps the latest
snapshot whole. A reader reads the partition's last record; if it is an end record, the
chunks it names. Anything else (a publish cut short, a record of another kind) is no
snapshot: the taker derives, as exact, only slower.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any

from aiokafka import TopicPartition

from streamproc.config import Settings
from streamproc.kafka import clients

__all__ = ["CHUNK_BYTES", "fetch_snapshots", "publish_snapshot"]

log = logging.getLogger(__name__)
# Under the 1 MB a Kafka broker takes by default (``message.max.bytes``), with room for
# the record's own overhead; a 100,000-lead partition's snapshot is ~0.9 MB (2 chunks).
CHUNK_BYTES = 512 * 1024
_ID = 16  # bytes of a snapshot's random id, at the head of each of its records
_END = struct.Struct(">iq")  # chunks, offset of the first
_FETCH_BYTES = 2 * CHUNK_BYTES


def _key(partition: int, part: str) -> bytes:
    return f"{partition}:{part}".encode()


async def publish_snapshot(producer: Any, topic: str, partition: int, data: bytes) -> int:
    """Publish one partition's snapshot with an aiokafka producer (started); returns the
    records written. The end record goes once the broker has every chunk."""
    snapshot_id = os.urandom(_ID)
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    sent = [
        await producer.send(
            topic, snapshot_id + chunk, key=_key(partition, str(i)), partition=partition
        )
        for i, chunk in enumerate(chunks)
    ]
    first = (await sent[0]).offset
    for delivery in sent[1:]:
        await delivery
    end = snapshot_id + _END.pack(len(chunks), first)
    await producer.send_and_wait(topic, end, key=_key(partition, "end"), partition=partition)
    return len(chunks) + 1


async def fetch_snapshots(
    settings: Settings, topic: str, partitions: list[int]
) -> dict[int, bytes]:
    """The latest whole snapshot of each partition that has one on the broker."""
    if not partitions:
        return {}
    async with clients.assigned(settings, topic, partitions, _FETCH_BYTES) as on:
        on.consumer.pause(*on.partitions.values())  # each read from where it is needed
        found = {}
        for p, tp in on.partitions.items():
            if on.ends[tp] > on.firsts[tp]:
                data = await _read_latest(on.consumer, tp, on.ends[tp])
                if data is not None:
                    found[p] = data
        return found


async def _read_latest(consumer: Any, tp: TopicPartition, end: int) -> bytes | None:
    last = await _records(consumer, tp, end - 1, 1)
    if len(last) != 1 or last[0].key != _key(tp.partition, "end") or last[0].value is None:
        return None  # not an end record (a publish cut short, a tombstone): no snapshot
    snapshot_id, tail = last[0].value[:_ID], last[0].value[_ID:]
    if len(tail) != _END.size:
        return None
    count, first = _END.unpack(tail)
    chunks = await _records(consumer, tp, first, count)
    if len(chunks) != count:
        return None
    body = []
    for i, record in enumerate(chunks):
        value = record.value or b""
        if record.key != _key(tp.partition, str(i)) or value[:_ID] != snapshot_id:
            log.info("%s: the snapshot at %d is not whole: not used", tp, first)
            return None
        body.append(value[_ID:])
    return b"".join(body)


async def _records(consumer: Any, tp: TopicPartition, start: int, count: int) -> list[Any]:
    """``count`` records from ``start`` (fewer if the partition has fewer)."""
    consumer.seek(tp, start)
    consumer.resume(tp)
    got: list[Any] = []
    empty_polls = 0
    while len(got) < count and empty_polls < 3:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=count - len(got))
        records = [r for r in batch.get(tp, []) if r.offset >= start]
        empty_polls = 0 if records else empty_polls + 1
        got.extend(records)
    consumer.pause(tp)
    return got[:count]
