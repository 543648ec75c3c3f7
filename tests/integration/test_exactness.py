"""Exactness under at-least-once: a worker joining mid-stream and one SIGKILLed mid-stream."""

from __future__ import annotations

import threading
import time

import pytest

from streamproc.net import free_port
from tests.faults.support import Message, Stream, wait_exact
from tests.scenario import noon_zone

from .harness import combined

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
        timezone=noon_zone(now), partitions=4, activity_targets={"rep-01": 40}
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
