"""Serving other services: metric topics, the Redis snapshot, all from real workers."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest
import redis

from streamproc.tools.sales_team import rfc3339
from tests.support.harness import TopicReader, series, wait_until
from tests.support.scenario import Scenario, noon_zone

pytestmark = pytest.mark.integration


def _produce_scenario(producer, settings, scenario: Scenario) -> None:  # type: ignore[no-untyped-def]
    for topic, key, value in scenario.messages(settings.topic_prefix):
        producer.produce(topic, key=key, value=value)
    producer.flush(10)


def test_pipeline_subscriber_sees_the_forecast_of_metrics_and_finals(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    scenario = Scenario()
    settings = settings_factory(timezone=noon_zone(scenario.now))
    make_topics(settings)
    worker = worker_factory(settings)
    _produce_scenario(kafka_producer(), settings, scenario)
    reader = TopicReader(settings, settings.topic("metrics.pipeline"))

    def forecasts() -> dict[str, float]:
        reader.poll()
        return {
            m["labels"]["rep"]: m["value"]
            for m in reader.latest().values()
            if m["metric"] == "sales_forecast_value"
        }

    wait_until(lambda: forecasts() == {"r1": 31947.0, "r3": 500.0}, timeout=30)
    samples = worker.samples()
    for rep, value in forecasts().items():
        assert samples[series("sales_forecast_value", rep=rep)] == value

    def stage_entries(window: str, *, final: bool) -> list[dict[str, Any]]:
        reader.poll()
        return [
            m
            for m in reader.values()
            if m["metric"] == "sales_stage_entries"
            and m["window"] == window
            and m["final"] is final
        ]

    # the forecast and the stage entries may come in different batches of the topic
    sample = wait_until(lambda: stage_entries("1h", final=False), timeout=30)[0]
    assert sample["window_start"] and sample["value"] > 0
    # the 1h window moves on every minute: its series get a last message with final: true
    wait_until(lambda: stage_entries("1h", final=True), timeout=75, interval=0.5)


def test_a_burst_is_coalesced_to_one_message_per_series_per_second(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    settings = settings_factory()
    make_topics(settings)
    worker_factory(settings)
    producer = kafka_producer()
    reader = TopicReader(settings, settings.topic("metrics.activity"))
    start = time.monotonic()
    for i in range(10_000):
        lead = f"burst-{i % 50}"
        event = {
            "event_id": f"b-{i}",
            "occurred_at": rfc3339(time.time() - 5),
            "lead_id": lead,
            "rep_id": "burst-rep",
            "channel": "call",
            "connected": i % 3 == 0,
        }
        producer.produce(
            settings.topic("contact-attempted"), key=lead.encode(), value=orjson.dumps(event)
        )
        producer.poll(0)
    producer.flush(10)
    key = 'sales_contact_attempts{channel="call",rep="burst-rep",window="1h"}'

    def done() -> bool:
        reader.poll()
        latest = reader.latest().get(key)
        return latest is not None and latest["value"] == 10_000

    wait_until(done, timeout=60)
    burst_seconds = time.monotonic() - start
    per_series = Counter(k for _, k, m in reader.records if not m["final"])
    assert 1 <= per_series[key] <= burst_seconds + 1, (per_series[key], burst_seconds)


def test_redis_down_mid_stream_then_back_empty_resyncs(
    settings_factory, make_topics, worker_factory, kafka_producer, redis_server_factory
) -> None:
    server = redis_server_factory()
    settings = settings_factory(redis_url=server.url)
    make_topics(settings)
    worker = worker_factory(settings)
    producer = kafka_producer()
    client = redis.Redis.from_url(server.url)

    def send(n: int, prefix: str) -> None:
        for i in range(n):
            lead = f"{prefix}-{i}"
            event = {
                "event_id": lead,
                "occurred_at": rfc3339(time.time() - 5),
                "lead_id": lead,
                "rep_id": "rr",
                "source": "web",
            }
            producer.produce(
                settings.topic("lead-created"), key=lead.encode(), value=orjson.dumps(event)
            )
        producer.flush(10)

    def snapshot_value() -> float | None:
        raw = client.hget("streamproc:kpi:sales_leads_created", 'rep="rr",source="web",window="1h"')
        return orjson.loads(raw)["value"] if raw else None

    created = series("sales_leads_created", window="1h", rep="rr", source="web")
    send(100, "a")
    wait_until(lambda: snapshot_value() == 100, timeout=20)
    server.stop()
    send(100, "b")  # Redis down: events keep flowing and are counted
    wait_until(lambda: worker.samples().get(created) == 200, timeout=20)

    def redis_down() -> bool:
        status, body = worker.get("/readyz")
        assert status == 200  # ready: Redis is a side output, not a dependency of the KPIs
        return any(s.get("redis") == "down" for s in orjson.loads(body)["sinks"])

    wait_until(redis_down, timeout=15)
    assert worker.samples()[series("streamproc_redis_up")] == 0
    server.start()  # back, and empty
    client = redis.Redis.from_url(server.url)
    wait_until(lambda: snapshot_value() == 200, timeout=20)
    assert worker.samples()[series("streamproc_redis_up")] == 1
