"""Publishing SLA alerts: a round that could not publish leaves its deadlines in the watch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.exceptions import NotReady
from prometheus_client import CollectorRegistry, Counter

from streamproc.business_hours import SlaClock
from streamproc.config import Settings
from streamproc.engine.lead import Created, LeadState
from streamproc.engine.sla_watch import AlertWatch
from streamproc.serving.alerts import AlertPublisher

T0 = 1_800_000_000.0


class _Topic:
    def __init__(self) -> None:
        self.stopped = True
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        if self.stopped:
            raise NotReady("Producer service not yet started")
        self.sent.append(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _LeadLog:
    async def write(self, leads: Any) -> None:
        pass


async def test_a_round_cut_short_schedules_its_deadlines_again() -> None:
    """The watch hands out a deadline once (``due``): a round that could not publish it
    (a shutdown stopped the producer) puts it back, for the next round or the snapshot."""
    watch = AlertWatch(Settings(_env_file=None, response_sla_seconds=300), SlaClock({}))
    counter = Counter("alerts", "alerts", ["kind"], registry=CollectorRegistry())
    topic = _Topic()
    publisher = AlertPublisher(watch, topic, _LeadLog(), counter)  # type: ignore[arg-type]
    lead = LeadState("L1", 0, first_seen=T0)
    lead.add(Created(T0, "c1", "r1", "web", "t1", False, None))
    leads = {"L1": lead}
    watch.schedule(lead)
    with pytest.raises(NotReady):
        await publisher.publish_due(leads, T0 + 301)
    assert lead.alerts == frozenset() and lead.packed
    assert sorted(level for _, level, _ in watch.deadlines(leads)[0]) == [1, 2]
    topic.stopped = False
    await publisher.publish_due(leads, T0 + 302)
    assert topic.sent == [b"L1"] and len(lead.alerts) == 1
