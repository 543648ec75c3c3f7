"""Redis stopped and restarted mid-stream: the KPIs stay exact, the workers healthy, and the
snapshot in Redis re-syncs to the truth once Redis is back (empty: it keeps no data)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis

from streamproc.tools.net import free_port
from tests.support.faults import Feed, Stream, events_total, fault_settings, verify, wait_settled
from tests.support.harness import SeriesKey, combined, series, wait_until
from tests.support.truth import differences

pytestmark = pytest.mark.fault

OUTAGE_SECONDS = 5.0
KEYS = "streamproc:kpi:*"


def redis_snapshot(client: redis.Redis) -> dict[SeriesKey, float]:
    """Every series in the ``streamproc:kpi:<metric>`` hashes, as (metric, labels) -> value."""
    out: dict[SeriesKey, float] = {}
    for key in client.scan_iter(KEYS):
        metric = key.decode().removeprefix("streamproc:kpi:")
        for raw in client.hvals(key):
            row: dict[str, Any] = orjson.loads(raw)
            out[(metric, frozenset(row["labels"].items()))] = float(row["value"])
    return out


def test_redis_stopped_and_restarted_mid_stream(
    settings_factory, make_topics, worker_factory, kafka_producer, redis_server_factory, figures
) -> None:
    server = redis_server_factory()
    settings = fault_settings(settings_factory, redis_url=server.url)
    make_topics(settings)
    stream = Stream(settings, 8_000, seed=41)
    workers = [
        worker_factory(settings, name="a", ready=False),
        worker_factory(
            settings.model_copy(update={"web_port": free_port()}), name="b", ready=False
        ),
    ]
    wait_settled(workers, settings.partitions)
    client = redis.Redis.from_url(server.url)
    feed = Feed(kafka_producer(), stream.messages, rate=600, hold_back=2_000).start()
    # The snapshot sink is wired in the worker: its hashes appear once KPIs exist.
    wait_until(lambda: client.keys(KEYS), timeout=30)

    feed.wait_for(0.3)
    server.stop()
    figures["redis_stopped_at"] = f"{feed.mid_stream()}/{feed.total}"
    before = sum(events_total(workers).values())
    deadline = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < deadline:  # healthy and still counting without Redis
        for worker in workers:
            assert worker.get("/healthz")[0] == 200, f"{worker.name} unhealthy without Redis"
        time.sleep(0.5)
    figures["handled_while_redis_down"] = int(sum(events_total(workers).values()) - before)
    assert figures["handled_while_redis_down"] > 0, "processing stopped with Redis"
    down = [orjson.loads(w.get("/readyz")[1]) for w in workers]
    figures["readyz_during_outage"] = down[0]
    total, _ = combined(workers)
    figures["redis_up_gauge_during_outage"] = total.get(series("streamproc_redis_up"))
    server.start()  # same port, empty: no persistence
    restarted = time.monotonic()
    figures["redis_restarted_at"] = f"{feed.mid_stream()}/{feed.total}"
    feed.release()

    feed.join()
    wait_settled(workers, settings.partitions)
    verify(stream, workers, figures)
    last: dict[str, Any] = {}

    def resynced() -> bool:
        nonlocal last
        last = differences(redis_snapshot(client), stream.kpis())
        return not last

    try:
        wait_until(resynced, timeout=60, interval=1.0)
    except TimeoutError:
        pytest.fail(f"Redis snapshot differs from the truth after the restart: {last}")
    figures["redis_resynced_after_s"] = round(time.monotonic() - restarted, 2)
    figures["redis_series"] = len(redis_snapshot(client))
    total, _ = combined(workers)
    assert total[series("streamproc_redis_up")] == len(workers), "redis_up gauge not back to 1"
