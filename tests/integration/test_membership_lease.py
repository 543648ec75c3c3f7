"""The producer's fence on the real broker: what is queued while the membership lease does
not stand fails with MembershipLost and never reaches the log; a renewal lets sends through."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.structs import TopicPartition

from streamproc.config import Settings
from streamproc.kafka import clients
from streamproc.kafka.lease import MembershipLease, MembershipLost, fence_sends
from streamproc.kafka.topics import create_topics


async def _end_offset(settings: Settings, topic: str) -> int:
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def test_nothing_queued_while_the_lease_is_out_reaches_the_broker(settings_factory) -> None:
    settings = settings_factory()
    await create_topics(settings)
    topic = settings.topic("alerts")  # any of the worker's: sent to partition 0 only
    now = [0.0]
    lease = MembershipLease(6.0, clock=lambda: now[0])
    producer = clients.producer(settings)
    await producer.start()
    try:
        fence_sends(producer, lease)
        lease.renew(0.0)
        await producer.send_and_wait(topic, b"before", partition=0)
        now[0] = 30.0  # a freeze past the session
        sent = await producer.send(topic, b"zombie", partition=0)
        with pytest.raises(MembershipLost, match="may have left its group"):
            await asyncio.wait_for(sent, 5)
        batch = producer.create_batch()  # the changelogs' way (kafka.batch_send)
        batch.append(key=b"k", value=b"zombie", timestamp=None)
        with pytest.raises(MembershipLost, match="may have left its group"):
            await asyncio.wait_for(await producer.send_batch(batch, topic, partition=0), 5)
        assert await _end_offset(settings, topic) == 1, "a fenced record reached the log"
        lease.renew(30.0)  # the rejoin
        await producer.send_and_wait(topic, b"after", partition=0)
        assert await _end_offset(settings, topic) == 2
    finally:
        await producer.stop()
