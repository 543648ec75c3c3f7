"""send_in_batches: one record batch per partition, in order, a new one when it is full."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamproc.kafka import batch_send as kafka_batch


class _Builder:
    def __init__(self, capacity: int) -> None:
        self.capacity, self.records = capacity, []

    def append(self, *, key: bytes, value: bytes | None, timestamp: int | None) -> object | None:
        if len(self.records) == self.capacity:
            return None  # aiokafka's answer when the batch is full
        self.records.append((key, value))
        return object()


class _Producer:
    """aiokafka's batch API as far as send_in_batches uses it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []

    def create_batch(self) -> _Builder:
        return _Builder(self.capacity)

    async def send_batch(self, batch: _Builder, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_records_go_out_per_partition_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = _Producer(capacity=2)
    monkeypatch.setattr(kafka_batch, "aiokafka_producer", lambda app: producer)
    records = [(b"a", b"1", 0), (b"b", b"2", 1), (b"c", None, 0), (b"d", b"4", 0)]
    futures = await kafka_batch.send_in_batches(object(), "t", records)  # type: ignore[arg-type]
    await asyncio.gather(*futures)
    assert producer.sent == [
        ("t", 0, [(b"a", b"1"), (b"c", None)]),
        ("t", 0, [(b"d", b"4")]),
        ("t", 1, [(b"b", b"2")]),
    ]
    assert len(futures) == 3


async def test_a_record_larger_than_a_batch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = _Producer(capacity=0)
    monkeypatch.setattr(kafka_batch, "aiokafka_producer", lambda app: producer)
    with pytest.raises(ValueError, match="exceeds a batch"):
        await kafka_batch.send_in_batches(object(), "t", [(b"a", b"x" * 10, 0)])  # type: ignore[arg-type]
    assert producer.sent == [], "an empty batch was sent"
