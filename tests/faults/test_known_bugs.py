"""Product bugs found by the fault scenarios, each pinned by a test of its own (all fixed).

docs/reliability.md describes each bug with the evidence from the scenario runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Counter_
from collections import defaultdict

import orjson
import pytest
from faust.types import TP
from intervaltree import IntervalTree

from streamproc.net import free_port
from streamproc.transport import ExactConsumer

from .support import (
    Feed,
    Stream,
    dead_letter_report,
    fault_settings,
    wait_settled,
)

pytestmark = pytest.mark.fault


def _consumer(committed: int | None) -> ExactConsumer:
    """The consumer's commit bookkeeping alone (no broker): what ``_new_offset`` reads."""
    consumer = object.__new__(ExactConsumer)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset = defaultdict(lambda: None)
    if committed is not None:
        consumer._committed_offset[TP("sales.email-opened", 3)] = committed
    return consumer


def test_a_hole_after_the_committed_offset_is_not_committed_past() -> None:
    """The guard the transport adds: it holds when the partition has a committed offset."""
    tp = TP("sales.email-opened", 3)
    consumer = _consumer(committed=0)
    consumer._acked[tp] = list(range(16, 39))  # 0-15 fetched, skipped, not acked
    consumer._acked_index[tp] = set(range(16, 39))
    assert consumer._new_offset(tp) is None


def test_a_hole_at_the_head_of_a_never_committed_partition_is_not_committed_past() -> None:
    """Seen in the join/leave scenario: email-opened[3] offsets 0-15 were never applied and
    the group's committed offset was 39 (the partition had no commit before the rebalance
    that skipped them; faust's own check also needs a committed offset)."""
    tp = TP("sales.email-opened", 3)
    consumer = _consumer(committed=None)
    consumer._acked[tp] = list(range(16, 39))
    consumer._acked_index[tp] = set(range(16, 39))
    assert consumer._new_offset(tp) is None, "would commit 39: offsets 0-15 are lost"


def test_a_dead_letter_is_written_once_even_after_a_replay(
    settings_factory, make_topics, worker_factory, kafka_producer, figures
) -> None:
    """A worker SIGKILLed mid-stream, a replacement replays what was not committed: with a
    third of the messages invalid, the replayed tail always holds some of them."""
    settings = fault_settings(settings_factory)
    make_topics(settings)
    stream = Stream(settings, 1_200, invalid=600, seed=61)
    first = worker_factory(settings, name="first")
    feed = Feed(kafka_producer(), stream.messages, rate=600, hold_back=400).start()
    feed.wait_for(0.5)
    first.kill()
    feed.release()
    feed.join()
    second = worker_factory(
        settings.model_copy(update={"web_port": free_port()}), name="second", ready=False
    )
    wait_settled([second], settings.partitions, timeout=90)
    report = dead_letter_report(settings, stream.invalid)
    figures["invalid"] = report.expected
    figures["dead_letters"] = report.written
    figures["duplicated"] = sum(n - 1 for n in report.duplicated.values())
    assert not report.missing
    assert not report.duplicated, f"{figures['duplicated']} dead letters written twice"


async def test_each_alert_id_is_published_once_when_a_contact_races_both_breach_levels() -> None:
    """Seen in the connection-cut scenario (14 alert ids twice, identical payloads at adjacent
    offsets, the worker logging the same resolution twice within 3 ms) and after a SIGKILL:
    after any outage or catch-up a lead is often past twice its SLA, both breach levels go
    out in one publication, and a contact applied by the batch handler while that
    publication is in flight is resolved once per item of the lead."""
    from prometheus_client import CollectorRegistry, Counter

    from streamproc.alerting import AlertPublisher
    from streamproc.alerts import AlertWatch
    from streamproc.business_hours import SlaClock
    from streamproc.config import Settings
    from streamproc.lead import Attempt, Created, LeadState

    settings = Settings(_env_file=None)
    now = time.time()
    lead = LeadState("L1", 0, first_seen=now)
    lead.add(Created(now - 660, "L1-c", "r1", "web", "default", False, None))
    sent: list[dict[str, object]] = []

    class Topic:  # the alerts topic: the batch handler applies the contact meanwhile
        async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
            sent.append(orjson.loads(value))
            if not lead.attempts:
                lead.add(Attempt(now - 1, "L1-a", "r1", "call", True, None))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    class LeadLog:
        async def write(self, leads: object) -> None:
            await asyncio.sleep(0)

    counter = Counter("alerts", "alerts", ["kind"], registry=CollectorRegistry())
    publisher = AlertPublisher(
        AlertWatch(settings, SlaClock({})),
        Topic(),
        LeadLog(),
        counter,  # type: ignore[arg-type]
    )
    publisher.watch.schedule(lead)  # as after the batch that brought the lead-created
    await publisher.publish_due({"L1": lead}, now)
    ids = Counter_(alert["alert_id"] for alert in sent)
    kinds = sorted(f"{a['kind']}/{a['level']}" for a in sent)
    assert kinds[:2] == ["response_sla_breached/1", "response_sla_breached/2"], kinds
    print("KINDS", kinds)
    assert all(n == 1 for n in ids.values()), f"published more than once: {kinds}"
