"""The snapshots on the broker: a worker stopping cleanly publishes each partition's
aggregates snapshot (``state.snapshots``) beside its data dir's copy, so that the worker
taking the partition over (a survivor in a hand-over, a new worker with an empty data dir)
loads it instead of deriving the aggregates from every lead (~100 us a lead: ~5 s of a
50,000-lead hand-over, ~10 s of a 100,000-lead empty data dir); then, once it has left the
group, the partition's table copy (``state.table_copies``), which a worker without a data
dir seeds its disk copy from instead of reading every changelog record ever written.

One compacted topic, co-partitioned with the inputs: partition N's snapshot goes to its
partition N, as chunks under a broker's default record size limit (1 MB) and then an end
record naming them. Keys ``<N>:<i>`` (the aggregates), ``<N>:c<i>`` (the table copy) and
``<N>:end``, so compaction keeps the latest snapshot whole. The end record names the
aggregates' chunks, and the copy's once they are all on the broker (a second end record,
which replaces the first); each copy chunk names its aggregates' end record, so a copy cut
short still leaves the aggregates found. A reader reads the partition's last record, then
the chunks it names. Anything else (a publish cut short, a record of another kind) is no
snapshot: the taker derives, or reads the changelog, as exact, only slower.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from streamproc.config import Settings
from streamproc.kafka import clients

__all__ = [
    "AGGREGATES",
    "CHUNK_BYTES",
    "COPY",
    "Named",
    "Published",
    "SnapshotParts",
    "fetch_snapshot_parts",
    "fetch_snapshots",
    "latest_named",
    "publish_copy",
    "publish_snapshot",
    "same_parts",
]

log = logging.getLogger(__name__)
# Under the 1 MB a Kafka broker takes by default (``message.max.bytes``), with room for
# the record's own overhead; a 100,000-lead partition's snapshot is ~0.9 MB (2 chunks).
CHUNK_BYTES = 512 * 1024
_ID = 16  # bytes of a snapshot's random id, at the head of each of its records
_END = struct.Struct(">iq")  # chunks, offset of the first (one per part)
_AFTER = struct.Struct(">q")  # at the head of a copy chunk: its aggregates' end record
_FETCH_BYTES = 2 * CHUNK_BYTES
# The parts of a snapshot, in the order of their pointers in the end record.
AGGREGATES, COPY = 0, 1
_PREFIX = {AGGREGATES: "", COPY: "c"}  # of the chunks' keys: ``<N>:<prefix><i>``


class Published(NamedTuple):
    """Where a partition's aggregates snapshot went."""

    snapshot_id: bytes
    chunks: int
    first: int  # offset of the first chunk
    end: int  # offset of the end record


Named = tuple[bytes, list[tuple[int, int]]]
"""A snapshot as its end record names it: its id, and (chunks, first offset) of each part."""


class SnapshotParts(NamedTuple):
    """What ``fetch_snapshot_parts`` read: the latest snapshot of each partition as named
    (None: none), and the parts found of it, whole."""

    named: dict[int, Named | None]
    found: dict[int, dict[int, bytes]]


def same_parts(before: Named | None, now: Named | None, parts: tuple[int, ...]) -> bool:
    """Whether the latest snapshot ``now`` has the same ``parts`` as ``before``: the same
    snapshot, whose table copy (published after its leave) may have come since."""
    if before is None or now is None:
        return before is now
    return before[0] == now[0] and all(_at(before, p) == _at(now, p) for p in parts)


def _at(named: Named, part: int) -> tuple[int, int] | None:
    return named[1][part] if part < len(named[1]) else None


def _key(partition: int, part: str) -> bytes:
    return f"{partition}:{part}".encode()


async def publish_snapshot(producer: Any, topic: str, partition: int, data: bytes) -> Published:
    """Publish one partition's aggregates snapshot with an aiokafka producer (started). The
    end record goes once the broker has every chunk."""
    snapshot_id = os.urandom(_ID)
    chunks, first = await _send_chunks(producer, topic, partition, snapshot_id, data, AGGREGATES)
    end = await producer.send_and_wait(
        topic,
        snapshot_id + _END.pack(chunks, first),
        key=_key(partition, "end"),
        partition=partition,
    )
    return Published(snapshot_id, chunks, first, end.offset)


async def publish_copy(
    producer: Any, topic: str, partition: int, data: bytes, snapshot: Published
) -> int:
    """Publish the partition's table copy after its aggregates ``snapshot``: its chunks,
    then an end record naming both. Returns the records written."""
    head = _AFTER.pack(snapshot.end)
    chunks, first = await _send_chunks(
        producer, topic, partition, snapshot.snapshot_id, data, COPY, head
    )
    parts = _END.pack(snapshot.chunks, snapshot.first) + _END.pack(chunks, first)
    await producer.send_and_wait(
        topic, snapshot.snapshot_id + parts, key=_key(partition, "end"), partition=partition
    )
    return chunks + 1


async def _send_chunks(
    producer: Any,
    topic: str,
    partition: int,
    snapshot_id: bytes,
    data: bytes,
    part: int,
    head: bytes = b"",
) -> tuple[int, int]:
    """Send ``data`` in chunks, each with the id and ``head``: (chunks, first offset)."""
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    sent = [
        await producer.send(
            topic,
            snapshot_id + head + chunk,
            key=_key(partition, f"{_PREFIX[part]}{i}"),
            partition=partition,
        )
        for i, chunk in enumerate(chunks)
    ]
    first = (await sent[0]).offset
    for delivery in sent[1:]:
        await delivery
    return len(chunks), first


async def fetch_snapshots(
    settings: Settings, topic: str, partitions: list[int], part: int = AGGREGATES
) -> dict[int, bytes]:
    """The ``part`` (``AGGREGATES``, ``COPY``) of the latest whole snapshot of each partition
    that has one on the broker."""
    fetched = await fetch_snapshot_parts(settings, topic, partitions, (part,))
    return {p: parts[part] for p, parts in fetched.found.items() if part in parts}


async def latest_named(
    settings: Settings, topic: str, partitions: list[int]
) -> dict[int, Named | None]:
    """The latest snapshot of each partition as its end record names it: read its last
    record (and, if that is a chunk of a table copy on its way, its snapshot's end)."""
    if not partitions:
        return {}
    async with clients.assigned(settings, topic, partitions, _FETCH_BYTES) as on:
        return await _latest(on)


async def _latest(on: clients.Assigned) -> dict[int, Named | None]:
    """Every partition's last record in the same fetches: one partition after the other,
    each read took ~0.1 s on tansu (0.4 s of each take-over's check of four)."""
    starts = {tp: on.ends[tp] - 1 for tp in on.partitions.values() if on.ends[tp] > on.firsts[tp]}
    last = await _records_of(on.consumer, starts, 1)
    return {
        p: await _parts(on.consumer, tp, last[tp][0]) if last.get(tp) else None
        for p, tp in on.partitions.items()
    }


async def fetch_snapshot_parts(
    settings: Settings,
    topic: str,
    partitions: list[int],
    parts: tuple[int, ...],
    max_bytes: int | None = None,
) -> SnapshotParts:
    """The ``parts`` of the latest whole snapshot of each partition, with one consumer:
    a consumer's start and offset lookups are round trips of their own (0.055 s on tansu
    for an empty topic, quiet machine, 7 Dec), paid once for every partition.
    ``max_bytes``: no partition more once those fetched hold that many (the others are
    left out of ``named`` as well as of ``found``)."""
    if not partitions:
        return SnapshotParts({}, {})
    async with clients.assigned(settings, topic, partitions, _FETCH_BYTES) as on:
        found: dict[int, dict[int, bytes]] = {}
        named_now = await _latest(on)  # once for all parts
        latest: dict[int, Named | None] = {}
        held = 0
        for p, tp in on.partitions.items():
            if max_bytes is not None and held >= max_bytes:
                break
            named = latest[p] = named_now[p]
            for part in parts:
                data = await _read_part(on.consumer, tp, named, part)
                if data is not None:
                    found.setdefault(p, {})[part] = data
                    held += len(data)
        return SnapshotParts(latest, found)


async def _read_part(
    consumer: Any,
    tp: TopicPartition,
    named: Named | None,
    part: int,
) -> bytes | None:
    """The ``part`` of the snapshot ``named`` (``_parts``), if whole."""
    if named is None or part >= len(named[1]):
        return None  # no snapshot, or none with this part: derive, read the changelog
    snapshot_id, parts = named
    count, first = parts[part]
    chunks = await _records(consumer, tp, first, count)
    if len(chunks) != count:
        return None
    skip = _ID + (_AFTER.size if part == COPY else 0)
    body = []
    for i, record in enumerate(chunks):
        value = record.value or b""
        key = _key(tp.partition, f"{_PREFIX[part]}{i}")
        if record.key != key or value[:_ID] != snapshot_id:
            log.info("%s: the snapshot at %d is not whole: not used", tp, first)
            return None
        body.append(value[skip:])
    return b"".join(body)


async def _parts(consumer: Any, tp: TopicPartition, last: Any) -> Named | None:
    """(the snapshot id, (chunks, first offset) of each part) that the partition's last
    record names: an end record; a copy chunk (the copy was cut short) names its
    aggregates' end record. None: no snapshot (a tombstone, a publish cut short)."""
    value = last.value
    if last.key == _key(tp.partition, "end") and value is not None:
        tail = value[_ID:]
        if not tail or len(tail) % _END.size:
            return None
        return value[:_ID], [_END.unpack_from(tail, i) for i in range(0, len(tail), _END.size)]
    copy_chunk = (last.key or b"").startswith(_key(tp.partition, _PREFIX[COPY]))
    if not copy_chunk or value is None or len(value) < _ID + _AFTER.size:
        return None
    (after,) = _AFTER.unpack_from(value, _ID)
    ends = await _records(consumer, tp, after, 1)
    if len(ends) != 1 or ends[0].key != _key(tp.partition, "end") or ends[0].value is None:
        return None
    named = await _parts(consumer, tp, ends[0])
    if named is None or named[0] != value[:_ID]:
        return None
    return named[0], named[1][:1]  # the copy's own end record never came


async def _records(consumer: Any, tp: TopicPartition, start: int, count: int) -> list[Any]:
    """``count`` records from ``start`` (fewer if the partition has fewer)."""
    return (await _records_of(consumer, {tp: start}, count))[tp]


async def _records_of(
    consumer: Any, starts: dict[TopicPartition, int], count: int
) -> dict[TopicPartition, list[Any]]:
    """``count`` records of each partition from its start (fewer if it has fewer), read in
    the same fetches; gives up after three fetches in a row that brought none."""
    for tp, start in starts.items():
        consumer.seek(tp, start)
    consumer.resume(*starts)
    got: dict[TopicPartition, list[Any]] = {tp: [] for tp in starts}
    wanted, empty_polls = set(starts), 0
    while wanted and empty_polls < 3:
        most = count - len(got[next(iter(wanted))]) if len(wanted) == 1 else None
        batch = await consumer.getmany(*wanted, timeout_ms=1000, max_records=most)
        empty_polls += 1
        for tp, records in batch.items():
            if tp in wanted and (new := [r for r in records if r.offset >= starts[tp]]):
                got[tp].extend(new)
                empty_polls = 0
                if len(got[tp]) >= count:
                    wanted.discard(tp)
                    consumer.pause(tp)
    consumer.pause(*wanted)
    return {tp: records[:count] for tp, records in got.items()}
