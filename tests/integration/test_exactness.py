"""Exactness under at-least-once: a worker joining mid-stream and one SIGKILLed mid-stream."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from streamproc.tools.net import free_port
from streamproc.tools.sales_team import rfc3339
from tests.support.faults import FAULT_LEAD_CACHE, Message, Stream, wait_exact
from tests.support.harness import combined, lead_cache_reads, series, wait_until
from tests.support.scenario import noon_zone

pytestmark = pytest.mark.integration

EVENTS = 24_000


def _producer_thread(  # type: ignore[no-untyped-def]
    producer, messages: list[Message], chunk: int, pause: float
) -> threading.Thread:
    def run() -> None:
        for start in range(0, len(messages), chunk):
            for msg in messages[start : start + chunk]:
                producer.produce(msg.topic, key=msg.key, value=msg.value)
                producer.poll(0)
            time.sleep(pause)
        producer.flush(30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_join_and_sigkill_mid_stream_neither_lose_nor_double_count(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    now = time.time()
    settings = settings_factory(
        timezone=noon_zone(now),
        partitions=4,
        activity_targets={"rep-01": 40},
        lead_cache_size=FAULT_LEAD_CACHE,  # 2,500 leads: most read back from disk
    )
    make_topics(settings)
    # 20 minutes of a busy team, scrambled, with duplicates: all inside every window
    stream = Stream(settings, EVENTS, leads=2_500, invalid=0, seed=3, now=now)

    first = worker_factory(settings, name="first")
    thread = _producer_thread(kafka_producer(), stream.messages, chunk=400, pause=0.05)
    time.sleep(1.5)
    second = worker_factory(
        settings.model_copy(update={"web_port": free_port()}), name="second", ready=False
    )
    time.sleep(3)
    first.kill()  # SIGKILL mid-stream: uncommitted work is replayed by the next owner
    third = worker_factory(
        settings.model_copy(update={"web_port": free_port()}), name="third", ready=False
    )
    thread.join(120)
    live = [second, third]
    for worker in live:
        worker.wait_ready(90)

    # On failure: what differs, and which events the leads' changelog lacks and where.
    wait_exact(live, stream.kpis, timeout=90, stream=stream)
    _, exporters = combined(live)
    twice = [
        k
        for k, n in exporters.items()
        if n > 1
        and k[0].startswith("sales_")
        and ("ratio" in k[0] or k[0].endswith("_seconds") or "per_rep" in k[0])
    ]
    assert not twice
    assert all(lead_cache_reads(worker) > 0 for worker in live), "leads came back from disk"


def _send(producer, settings, kind: str, event: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    key = event["lead_id"].encode()
    producer.produce(settings.topic(kind), key=key, value=orjson.dumps(event))
    producer.flush(5)


def test_a_summary_a_killed_worker_left_behind_goes_with_the_next_owner(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    """A lead's loss comes before its lead-created: counted under source ``unknown`` and
    published so, then moved to its source, and the worker killed before its next publish
    round could retract the ``unknown`` summary. The next owner never has that key itself:
    its first round must sweep the summary away (before, it stayed for good: seen as a
    SIGKILL exactness run that never converged, about 1 in 10)."""
    now = time.time()
    settings = settings_factory(timezone=noon_zone(now), publish_interval_seconds=8.0)
    make_topics(settings)
    producer = kafka_producer()
    first = worker_factory(settings, name="first")
    unknown = series("sales_win_ratio", source="unknown", window="1h")
    referral = series("sales_win_ratio", source="referral", window="1h")
    lead = {"lead_id": "late-created", "rep_id": "r1"}
    loss = {"event_id": "l-lost", "occurred_at": rfc3339(now - 60), "from_stage": None}
    loss |= {"to_stage": "lost", "lost_reason": "price"}
    _send(producer, settings, "stage-changed", lead | loss)
    wait_until(lambda: unknown in first.samples(), timeout=30, interval=0.1)
    # A round has just run: the next is 8 s away.
    created = {"event_id": "l-created", "occurred_at": rfc3339(now - 600), "source": "referral"}
    _send(producer, settings, "lead-created", lead | created)
    topic = settings.topic("lead-created")
    processed = series("streamproc_events_total", topic=topic, outcome="processed")
    wait_until(lambda: first.samples().get(processed) == 1, timeout=5, interval=0.05)
    time.sleep(0.5)  # the batch's changelog write
    assert unknown in first.samples()  # not retracted yet
    first.kill()

    second = worker_factory(settings.model_copy(update={"publish_interval_seconds": 1.0}))
    wait_until(lambda: referral in second.samples(), timeout=30)
    wait_until(lambda: unknown not in second.samples(), timeout=10)
    for _ in range(6):  # and it stays away over the next rounds
        time.sleep(0.5)
        assert unknown not in second.samples()
