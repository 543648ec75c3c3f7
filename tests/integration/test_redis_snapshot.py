"""RedisSnapshotSink on a real, private redis-server: writes, outages, restarts, ownership."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from streamproc.config import Settings
from streamproc.engine.windows import WindowClock
from streamproc.kpis.compute import Sample
from streamproc.serving.prometheus import ProcessorMetrics
from streamproc.serving.sinks.base import Backoff
from streamproc.serving.sinks.redis_snapshot import RedisSnapshotSink, canonical_labels
from tests.support.harness import async_wait_until

from ..conftest import RedisServer

pytestmark = pytest.mark.integration

T0 = 1_700_000_010.0
CLOCK = WindowClock(ZoneInfo("UTC"))
FORECAST = "streamproc:kpi:sales_forecast_value"
RATIO = "streamproc:kpi:sales_connect_ratio"


def not_r9(metric: str, labels: dict[str, str]) -> bool:
    """This worker owns every rep but r9 (another worker's)."""
    return labels.get("rep") != "r9"


def forecast(rep: str, value: float) -> Sample:
    return Sample("sales_forecast_value", {"rep": rep}, None, value)


def ratio(rep: str, value: float) -> Sample:
    return Sample(
        "sales_connect_ratio", {"rep": rep, "channel": "call"}, CLOCK.bounds("1h", T0), value
    )


def stored(rep: str, value: float) -> bytes:
    """A value as another (or an earlier) worker would have written it."""
    body = {"value": value, "window_start": None, "updated_at": "2023-01-01T00:00:00Z"}
    return orjson.dumps({**body, "labels": {"rep": rep}})


class Env:
    """One private Redis, a client to look at it, and sinks stopped at teardown."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.client = aioredis.Redis.from_url(server.url, decode_responses=True)
        self.registry = CollectorRegistry()
        self.metrics = ProcessorMetrics.create(self.registry)
        self.sinks: list[RedisSnapshotSink] = []

    def sink(
        self, owns: Callable[[str, dict[str, str]], bool] = not_r9, **kw: Any
    ) -> RedisSnapshotSink:
        settings = Settings(_env_file=None, redis_url=self.server.url)
        kw.setdefault("backoff", Backoff(0.05, 0.3))
        sink = RedisSnapshotSink(settings, owns, self.metrics.redis_up, **kw)
        self.sinks.append(sink)
        return sink

    @property
    def gauge(self) -> float | None:
        return self.registry.get_sample_value("streamproc_redis_up")

    async def fields(self, key: str) -> dict[str, dict[str, Any]]:
        return {f: orjson.loads(v) for f, v in (await self.client.hgetall(key)).items()}


@pytest.fixture
async def env(redis_server_factory: Callable[[], RedisServer]) -> AsyncIterator[Env]:
    env = Env(redis_server_factory())
    yield env
    for sink in env.sinks:
        await sink.stop()
    await env.client.aclose()


async def test_snapshot_written_updated_and_vanished_deleted(env: Env) -> None:
    sink = env.sink()
    await sink.start()
    await sink.publish([forecast("r1", 10.0), forecast("r2", 20.0), ratio("r1", 0.5)], T0)

    async def written() -> bool:
        return len(await env.fields(FORECAST)) == 2 and len(await env.fields(RATIO)) == 1

    await async_wait_until(written, 5.0)
    field = canonical_labels({"rep": "r1", "channel": "call", "window": "1h"})
    assert field == 'channel="call",rep="r1",window="1h"'
    value = (await env.fields(RATIO))[field]
    assert value["value"] == 0.5
    assert value["window_start"] == "2023-11-14T21:14:00.000Z"
    assert value["updated_at"] == "2023-11-14T22:13:30.000Z"
    assert value["labels"] == {"rep": "r1", "channel": "call", "window": "1h"}
    assert (await env.fields(FORECAST))['rep="r1"']["window_start"] is None
    await async_wait_until(lambda: _is_up(env, sink), 5.0)  # set once the whole sync cycle is done

    # r2 vanished (this worker owns it, it has no value any more): its field goes.
    await sink.publish([forecast("r1", 11.0), ratio("r1", 0.5)], T0 + 1)

    async def updated() -> bool:
        fields = await env.fields(FORECAST)
        return list(fields) == ['rep="r1"'] and fields['rep="r1"']["value"] == 11.0

    await async_wait_until(updated, 5.0)
    # Unchanged series keep their updated_at.
    assert (await env.fields(RATIO))[field]["updated_at"] == "2023-11-14T22:13:30.000Z"


async def test_redis_down_then_back_empty(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamproc.serving.sinks")
    sink = env.sink()
    await sink.start()
    samples = [forecast("r1", 1.0), forecast("r2", 2.0), ratio("r1", 0.25)]
    await sink.publish(samples, T0)
    await async_wait_until(lambda: _has(env, FORECAST, 2), 5.0)

    env.server.stop()
    slowest = 0.0
    for i in range(30):
        started = time.perf_counter()
        await sink.publish([*samples, forecast("r3", float(i))], T0 + i)
        slowest = max(slowest, time.perf_counter() - started)
        await asyncio.sleep(0.05)
    assert slowest < 0.05
    assert sink.status["redis"] == "down" and "since" in sink.status
    assert env.gauge == 0

    env.server.start()  # same port, no persistence: Redis comes back empty
    await async_wait_until(lambda: _has(env, FORECAST, 3), 5.0)
    assert (await env.fields(FORECAST))['rep="r3"']["value"] == 29.0
    assert len(await env.fields(RATIO)) == 1
    await async_wait_until(lambda: _is_up(env, sink), 5.0)
    messages = [
        r.getMessage() for r in caplog.records if r.name.startswith("streamproc.serving.sinks")
    ]
    assert sum("unavailable" in m for m in messages) == 1  # once per outage
    assert sum("available again" in m for m in messages) == 1


async def test_redis_hanging_is_an_outage_too(env: Env) -> None:
    sink = env.sink()
    await sink.start()
    await sink.publish([forecast("r1", 1.0)], T0)
    await async_wait_until(lambda: _has(env, FORECAST, 1), 5.0)
    pid = env.server._proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        slowest = 0.0
        for i in range(40):
            started = time.perf_counter()
            await sink.publish([forecast("r1", float(i))], T0 + i)
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.05)
        assert slowest < 0.05
        assert sink.status["redis"] == "down" and env.gauge == 0
    finally:
        os.kill(pid, signal.SIGCONT)

    async def caught_up() -> bool:
        return (await env.fields(FORECAST))['rep="r1"']["value"] == 39.0

    await async_wait_until(caught_up, 5.0)
    await async_wait_until(lambda: _is_up(env, sink), 5.0)


async def test_stale_owned_field_deleted_other_workers_kept(env: Env) -> None:
    await env.client.hset(FORECAST, 'rep="r2"', stored("r2", 5.0))  # ours, no longer current
    await env.client.hset(FORECAST, 'rep="r9"', stored("r9", 9.0))  # another worker's
    sink = env.sink()
    await sink.start()
    await sink.publish([forecast("r1", 1.0)], T0)

    async def synced() -> bool:
        return set(await env.fields(FORECAST)) == {'rep="r1"', 'rep="r9"'}

    await async_wait_until(synced, 5.0)
    assert (await env.fields(FORECAST))['rep="r9"']["value"] == 9.0


async def test_periodic_resync_repairs_the_snapshot(env: Env) -> None:
    sink = env.sink(resync_seconds=0.3)
    await sink.start()
    await sink.publish([forecast("r1", 1.0), forecast("r9", 9.0)], T0)
    await async_wait_until(lambda: _has(env, FORECAST, 2), 5.0)
    # A handed-over series, lost writes: Redis drifts from what this worker holds.
    await env.client.hdel(FORECAST, 'rep="r1"')
    await env.client.hset(FORECAST, 'rep="r4"', stored("r4", 4.0))
    await env.client.hset(FORECAST, 'rep="r8"', stored("r9", 8.0))  # not ours: kept

    async def repaired() -> bool:
        return set(await env.fields(FORECAST)) == {'rep="r1"', 'rep="r9"', 'rep="r8"'}

    await async_wait_until(repaired, 3.0)


async def test_nothing_deleted_before_the_first_snapshot(env: Env) -> None:
    await env.client.hset(FORECAST, 'rep="r2"', stored("r2", 5.0))
    sink = env.sink(resync_seconds=0.1)
    await sink.start()
    await async_wait_until(lambda: _is_up(env, sink), 5.0)
    await asyncio.sleep(0.3)
    assert 'rep="r2"' in await env.fields(FORECAST)


async def test_publish_alert(env: Env) -> None:
    sink = env.sink()
    await sink.start()
    pubsub = env.client.pubsub()
    await pubsub.subscribe("streamproc:alerts")
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    await sink.publish_alert("streamproc:alerts", b'{"kind": "response_sla_breached"}')
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    assert message is not None and message["data"] == '{"kind": "response_sla_breached"}'
    await pubsub.aclose()


async def test_disabled_without_redis_url() -> None:
    registry = CollectorRegistry()
    gauge = ProcessorMetrics.create(registry).redis_up
    sink = RedisSnapshotSink(Settings(_env_file=None), not_r9, gauge)
    await sink.start()
    await sink.publish([forecast("r1", 1.0)], T0)
    await sink.publish_alert("streamproc:alerts", b"{}")
    assert sink.status == {"redis": "disabled"}
    assert registry.get_sample_value("streamproc_redis_up") == 1
    await sink.stop()


async def _has(env: Env, key: str, count: int) -> bool:
    try:
        return len(await env.client.hgetall(key)) == count
    except (aioredis.ConnectionError, OSError):
        return False


async def _is_up(env: Env, sink: RedisSnapshotSink) -> bool:
    return sink.status["redis"] == "up" and env.gauge == 1
