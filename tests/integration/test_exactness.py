"""Exactness under at-least-once: a worker joining mid-stream and one SIGKILLed mid-stream."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from streamproc.net import free_port
from streamproc.simulate import history
from tests.scenario import noon_zone
from tests.truth import Truth, differences

from .harness import combined, wait_until

pytestmark = pytest.mark.integration

EVENTS = 24_000


def _producer_thread(producer, settings, events, chunk: int, pause: float) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        for start in range(0, len(events), chunk):
            for kind, event in events[start : start + chunk]:
                producer.produce(
                    settings.topic(kind), key=event["lead_id"].encode(), value=orjson.dumps(event)
                )
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
    events = list(
        history(settings, EVENTS, 2_500, 1_200, reps=6, seed=3, end=now - 60, scramble=True)
    )
    truth = Truth(settings)
    truth.feed(events, now)

    first = worker_factory(settings, name="first")
    thread = _producer_thread(kafka_producer(), settings, events, chunk=400, pause=0.05)
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

    def agree() -> bool:
        total, _ = combined(live)
        return not differences(total, truth.kpis(time.time()))

    try:
        wait_until(agree, timeout=90, interval=1.0)
    except TimeoutError:
        total, _ = combined(live)
        pytest.fail(f"KPIs differ from the truth: {differences(total, truth.kpis(time.time()))}")
    total, exporters = combined(live)
    twice = [
        k
        for k, n in exporters.items()
        if n > 1
        and k[0].startswith("sales_")
        and ("ratio" in k[0] or k[0].endswith("_seconds") or "per_rep" in k[0])
    ]
    assert not twice
