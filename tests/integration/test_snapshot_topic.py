"""The snapshots topic on the real broker: a partition's latest whole snapshot, and its
table copy, come back byte for byte, in chunks under the broker's record size limit; a
publish cut short or a partition without one gives nothing (the taker derives, or reads
the changelog)."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any
from zoneinfo import ZoneInfo

from streamproc.config import Settings
from streamproc.engine.windows import WindowClock
from streamproc.kafka import clients
from streamproc.kafka.snapshot_topic import (
    AGGREGATES,
    CHUNK_BYTES,
    COPY,
    Published,
    fetch_snapshot_parts,
    fetch_snapshots,
    publish_copy,
    publish_snapshot,
)
from streamproc.kafka.topics import create_topics, topic_names
from streamproc.state import table_copies
from streamproc.state.disk import Mark, StateDB
from streamproc.state.table_copies import TableCopy
from streamproc.worker import snapshotting
from streamproc.worker.snapshotting import SnapshotKeeper


async def _publish(settings: Settings, snapshots: dict[int, bytes], cut: int | None = None) -> None:
    """Publish each snapshot; ``cut``: stop after that many chunks of every one (a worker
    killed mid-publish)."""
    topic = topic_names(settings).snapshots
    producer = clients.producer(settings, max_request_size=2 * CHUNK_BYTES)
    await producer.start()
    try:
        for p, data in snapshots.items():
            if cut is None:
                chunks = max(1, -(-len(data) // CHUNK_BYTES))
                assert (await publish_snapshot(producer, topic, p, data)).chunks == chunks
            else:
                for i in range(cut):
                    key = f"{p}:{i}".encode()
                    await producer.send_and_wait(topic, os.urandom(16) + b"x", key=key, partition=p)
    finally:
        await producer.stop()


def test_the_latest_whole_snapshot_comes_back(settings_factory, make_topics) -> None:
    settings = settings_factory()
    make_topics(settings)
    topic = topic_names(settings).snapshots
    first = {0: os.urandom(2 * CHUNK_BYTES + 1000), 1: b"small", 2: os.urandom(CHUNK_BYTES)}
    asyncio.run(_publish(settings, first))
    assert asyncio.run(fetch_snapshots(settings, topic, [0, 1, 2, 3])) == first  # 3: none

    later = {0: os.urandom(CHUNK_BYTES // 2), 1: b""}  # fewer chunks than before
    asyncio.run(_publish(settings, later))
    asyncio.run(_publish(settings, {2: b""}, cut=1))  # cut short after the first chunk
    assert asyncio.run(fetch_snapshots(settings, topic, [0, 1, 2])) == later
    asyncio.run(_clear(settings, topic, 1))  # an operator's tombstone on its end record
    assert asyncio.run(fetch_snapshots(settings, topic, [0, 1])) == {0: later[0]}


async def _clear(settings: Settings, topic: str, partition: int) -> None:
    producer = clients.producer(settings)
    await producer.start()
    try:
        end = f"{partition}:end".encode()
        await producer.send_and_wait(topic, None, key=end, partition=partition)
    finally:
        await producer.stop()


async def _end_record_of_another_snapshot(settings: Settings, topic: str, partition: int) -> None:
    """An end record whose id is not that of the chunks it names (two publishes
    interleaved): the chunks are the previous snapshot's."""
    first = await _first_offset(settings, topic, partition)
    producer = clients.producer(settings)
    await producer.start()
    try:
        end = os.urandom(16) + struct.pack(">iq", 1, first)
        key = f"{partition}:end".encode()
        await producer.send_and_wait(topic, end, key=key, partition=partition)
    finally:
        await producer.stop()


async def _first_offset(settings: Settings, topic: str, partition: int) -> int:
    async with clients.assigned(settings, topic, [partition], CHUNK_BYTES) as on:
        return on.ends[on.partitions[partition]] - 2  # the last snapshot's one chunk


def test_chunks_of_another_snapshot_are_no_snapshot(settings_factory, make_topics) -> None:
    settings = settings_factory()
    make_topics(settings)
    topic = topic_names(settings).snapshots
    asyncio.run(_publish(settings, {0: b"one chunk"}))
    assert asyncio.run(fetch_snapshots(settings, topic, [0])) == {0: b"one chunk"}
    asyncio.run(_end_record_of_another_snapshot(settings, topic, 0))
    assert asyncio.run(fetch_snapshots(settings, topic, [0])) == {}


async def _publish_both(
    settings: Settings, aggregates: bytes, copy: bytes, copy_chunks: int | None = None
) -> None:
    """A snapshot and its table copy on partition 0; ``copy_chunks``: the copy cut short
    after that many chunks (a worker killed after its leave)."""
    topic = topic_names(settings).snapshots
    producer = clients.producer(settings, max_request_size=2 * CHUNK_BYTES)
    await producer.start()
    try:
        published = await publish_snapshot(producer, topic, 0, aggregates)
        if copy_chunks is None:
            await publish_copy(producer, topic, 0, copy, published)
            return
        after = published.snapshot_id + struct.pack(">q", published.end)
        for i in range(copy_chunks):
            chunk = copy[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
            await producer.send_and_wait(topic, after + chunk, key=f"0:c{i}".encode(), partition=0)
    finally:
        await producer.stop()


def test_the_table_copy_comes_after_its_snapshot_and_is_fetched_apart(
    settings_factory, make_topics
) -> None:
    settings = settings_factory()
    make_topics(settings)
    topic = topic_names(settings).snapshots
    aggregates, copy = os.urandom(CHUNK_BYTES + 10), os.urandom(3 * CHUNK_BYTES)

    def fetched(part: int) -> dict[int, bytes]:
        return asyncio.run(fetch_snapshots(settings, topic, [0], part))

    asyncio.run(_publish(settings, {0: b"older"}))
    assert fetched(COPY) == {}  # a snapshot without a copy
    asyncio.run(_publish_both(settings, aggregates, copy))
    assert fetched(AGGREGATES) == {0: aggregates}
    assert fetched(COPY) == {0: copy}
    # killed in the middle of its copy: the snapshot is still found, the copy is not
    later = os.urandom(100)
    asyncio.run(_publish_both(settings, later, copy, copy_chunks=2))
    assert fetched(AGGREGATES) == {0: later}
    assert fetched(COPY) == {}


async def _publish_copies(
    settings: Settings, db: StateDB, partitions: list[int], copies: bool = True
) -> dict[int, Published]:
    """Each partition's snapshot (its number, as bytes) and, if ``copies``, the table copy
    of ``db`` after it."""
    topic = topic_names(settings).snapshots
    producer = clients.producer(settings, max_request_size=2 * CHUNK_BYTES)
    await producer.start()
    published = {}
    try:
        for p in partitions:
            published[p] = await publish_snapshot(producer, topic, p, b"aggregates %d" % p)
            if copies:
                await _publish_copy(producer, topic, db, p, published[p])
    finally:
        await producer.stop()
    return published


async def _publish_copy(producer: Any, topic: str, db: StateDB, p: int, after: Published) -> None:
    data = table_copies.encode(p, {"leads": db})
    assert data is not None
    await publish_copy(producer, topic, p, data, after)


def _fetches_asked(monkeypatch: Any) -> list[tuple[list[int], Any]]:
    """The partitions and parts of each fetch a ``SnapshotKeeper`` makes, from now on."""
    asked: list[tuple[list[int], Any]] = []
    real = snapshotting.fetch_snapshot_parts

    async def counted(
        settings: Settings, topic: str, partitions: list[int], parts: Any, cap: Any = None
    ) -> Any:
        asked.append((list(partitions), parts))
        return await real(settings, topic, partitions, parts, cap)

    monkeypatch.setattr(snapshotting, "fetch_snapshot_parts", counted)
    return asked


async def test_copies_fetched_ahead_are_used_only_while_still_the_latest(
    settings_factory, make_topics, tmp_path, monkeypatch
) -> None:
    """Fetched while the first join waits (``SnapshotKeeper.fetch_ahead``), a partition's
    snapshot and copy seed it only if no newer one was published since; the others are
    fetched again, and the partitions not assigned are dropped."""
    settings = settings_factory()
    await create_topics(settings)
    db = StateDB(tmp_path / "leads")
    for p in range(4):
        db.apply(p, [(b"lead-%d" % p, b"old")], Mark(5, 5, b"\x05" * 16))
    await _publish_copies(settings, db, [0, 1, 2, 3])
    asked = _fetches_asked(monkeypatch)
    keeper = SnapshotKeeper(settings, list, list, lambda: None, topic_names(settings).snapshots)
    keeper.fetch_ahead(range(4), WindowClock(ZoneInfo("UTC")), (AGGREGATES, COPY))
    assert keeper.prefetched_records("leads")[1] == {0, 1, 2, 3}  # waits for the fetch
    db.apply(1, [(b"lead-1", b"new")], Mark(6, 6, b"\x06" * 16))
    await _publish_copies(settings, db, [1])  # a worker stopped during the join

    copies = await keeper.seed({0, 1})
    held = keeper._prefetch.result if keeper._prefetch is not None else None
    assert held is not None and sorted(held.copies) == [2, 3]  # 0, 1 are the seed's now
    assert [partitions for partitions, _ in asked] == [[0, 1, 2, 3], [1]]
    assert copies[0]["leads"].records == [(b"lead-0", b"old")]
    assert copies[1]["leads"] == TableCopy(Mark(6, 6, b"\x06" * 16), [(b"lead-1", b"new")])
    assert await keeper.fetch([0, 1]) == {0: b"aggregates 0", 1: b"aggregates 1"}
    keeper.load([], WindowClock(ZoneInfo("UTC")), 0.0, {})  # the recovery ends: 2, 3 go
    assert await keeper.seed({2}) and asked[-1] == ([2], (AGGREGATES, COPY))


async def test_snapshots_fetched_ahead_in_a_rebalance_serve_the_recovery_not_the_seed(
    settings_factory, make_topics, tmp_path, monkeypatch
) -> None:
    """A survivor fetches the snapshots of its standby partitions while the rebalance's
    join waits (the stopped worker published them before it left, their table copies
    after): its recovery takes them without fetching again; a seed, which needs the
    table copies too, still fetches them."""
    settings = settings_factory()
    await create_topics(settings)
    topic = topic_names(settings).snapshots
    db = StateDB(tmp_path / "leads")
    for p in range(2):
        db.apply(p, [(b"lead-%d" % p, b"v")], Mark(5, 5, b"\x05" * 16))
    published = await _publish_copies(settings, db, [0, 1], copies=False)
    asked = _fetches_asked(monkeypatch)
    keeper = SnapshotKeeper(settings, list, list, lambda: None, topic)
    clock = WindowClock(ZoneInfo("UTC"))
    keeper.fetch_ahead([0, 1], clock)
    assert keeper.prefetched_records("leads") == ({}, set())  # waits for the fetch
    producer = clients.producer(settings, max_request_size=2 * CHUNK_BYTES)
    await producer.start()
    try:  # the copies come after the fetch ahead, naming the same snapshots
        for p in range(2):
            await _publish_copy(producer, topic, db, p, published[p])
    finally:
        await producer.stop()
    assert await keeper.fetch([0, 1]) == {0: b"aggregates 0", 1: b"aggregates 1"}
    assert asked == [([0, 1], (AGGREGATES,))]
    keeper.load([], clock, 0.0, {})
    keeper.fetch_ahead([0, 1], clock)
    keeper.prefetched_records("leads")
    assert await keeper.seed({2}) == {} and asked[-1] == ([2], (AGGREGATES, COPY))
    copies = await keeper.seed({1})  # partition 0's snapshot stays for the fetch
    assert copies[1]["leads"].records == [(b"lead-1", b"v")]
    assert await keeper.fetch([0, 1]) == {0: b"aggregates 0", 1: b"aggregates 1"}
    assert asked[1:] == [
        ([0, 1], (AGGREGATES,)),
        ([2], (AGGREGATES, COPY)),
        ([1], (AGGREGATES, COPY)),
    ]


def test_a_fetch_with_a_byte_cap_leaves_the_partitions_past_it_out(
    settings_factory, make_topics
) -> None:
    settings = settings_factory()
    make_topics(settings)
    topic = topic_names(settings).snapshots
    asyncio.run(_publish(settings, {0: b"first", 1: b"second", 2: b"third"}))
    capped = asyncio.run(fetch_snapshot_parts(settings, topic, [0, 1, 2], (AGGREGATES,), 6))
    assert capped.found == {0: {AGGREGATES: b"first"}, 1: {AGGREGATES: b"second"}}
    assert sorted(capped.named) == [0, 1]  # 2 is the recovery's to fetch
