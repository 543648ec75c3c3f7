"""MetricTopicsSink: coalescing, finals on window end, live gauges, schema, send failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import orjson
import pytest

from streamproc.config import Settings
from streamproc.contract.outputs import series_key
from streamproc.engine.windows import WindowBounds, WindowClock
from streamproc.kpis.compute import Sample
from streamproc.serving.sinks.base import Backoff
from streamproc.serving.sinks.metric_topics import CLOSE_LATE_SECONDS, MetricTopicsSink
from tests.support.harness import async_wait_until

SCHEMA = Path(__file__).parents[3] / "schemas" / "metric-message.schema.json"
T0 = 1_700_000_010.0  # 10 s into a minute: a burst does not cross a 1h-window edge
CLOCK = WindowClock(ZoneInfo("UTC"))


class FakeSend:
    """Collects records like a producer; can fail or hang on demand."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, Any]] = []  # a tombstone's value: None
        self.fail = False
        self.hang = False
        self.calls = 0

    async def __call__(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise ConnectionError("broker down")
        self.records.append((topic, key, None if value is None else orjson.loads(value)))

    def of(self, key: str) -> list[dict[str, Any]]:
        return [msg for _, k, msg in self.records if k == key.encode()]


def ratio(value: float, now: float = T0, rep: str = "r1") -> Sample:
    labels = {"rep": rep, "channel": "call"}
    return Sample("sales_connect_ratio", labels, CLOCK.bounds("1h", now), value)


def forecast(value: float, rep: str = "r1") -> Sample:
    return Sample("sales_forecast_value", {"rep": rep}, None, value)


def key_of(sample: Sample) -> str:
    labels = dict(sample.labels)
    if sample.window is not None:
        labels["window"] = sample.window.name
    return series_key(sample.metric, labels)


@pytest.fixture
def send() -> FakeSend:
    return FakeSend()


@pytest.fixture
async def make_sink(send: FakeSend) -> AsyncIterator[Callable[..., MetricTopicsSink]]:
    sinks: list[MetricTopicsSink] = []

    def make(interval: float = 1.0, **kwargs: Any) -> MetricTopicsSink:
        kwargs.setdefault("owns", lambda metric, labels: True)
        settings = Settings(_env_file=None, publish_interval_seconds=interval)
        sink = MetricTopicsSink(settings, send, backoff=Backoff(0.02, 0.1), **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.stop()


async def test_burst_is_coalesced_to_the_latest_value(make_sink, send: FakeSend) -> None:
    sink = make_sink(interval=1.0)
    await sink.start()
    started = time.monotonic()
    for i in range(100):
        await sink.publish([ratio(i / 100), forecast(float(i))], T0)
        await asyncio.sleep(0.002)
    assert time.monotonic() - started < 1.0  # the burst fits in one interval
    await asyncio.sleep(1.2)  # past the interval: the latest value of the burst goes out

    for sample in (ratio(0.99), forecast(99.0)):
        messages = send.of(key_of(sample))
        assert 1 <= len(messages) <= 2
        assert messages[-1]["value"] == sample.value
        assert not any(m["final"] for m in messages)


async def test_unchanged_value_is_not_republished(make_sink, send: FakeSend) -> None:
    sink = make_sink(interval=0.02)
    await sink.start()
    for _ in range(5):
        await sink.publish([forecast(5.0)], T0)
        await asyncio.sleep(0.05)
    assert len(send.of(key_of(forecast(5.0)))) == 1


async def test_window_end_publishes_final_with_old_last_value(make_sink, send: FakeSend) -> None:
    sink = make_sink(interval=0.02)
    await sink.start()
    key = key_of(ratio(0.0))
    for value in (0.25, 0.5):
        await sink.publish([ratio(value)], T0)
        await async_wait_until(lambda v=value: any(m["value"] == v for m in send.of(key)), 3.0)
    later = T0 + 60  # the next minute: the 1h window moved on
    await sink.publish([ratio(0.75, later)], later)
    await async_wait_until(lambda: len(send.of(key)) == 4, 3.0)

    final, new = send.of(key)[2:]
    old_bounds, new_bounds = CLOCK.bounds("1h", T0), CLOCK.bounds("1h", later)
    assert final["final"] is True
    assert final["value"] == 0.5
    assert final["window_start"] == _rfc(old_bounds.start)
    assert final["window_end"] == _rfc(old_bounds.end)
    assert new["final"] is False
    assert new["value"] == 0.75
    assert new["window_start"] == _rfc(new_bounds.start)


async def test_vanished_series_tombstone_after_a_final_once_window_ended(
    make_sink, send: FakeSend
) -> None:
    """A series gone from the snapshot is gone from /metrics, /kpis and Redis: its last
    value on the topic must not stand for the current window (a count left the 1h window,
    a denominator dropped to 0), so it gets a tombstone."""
    sink = make_sink(interval=0.02)
    await sink.start()
    gone, ended = ratio(0.5, rep="r1"), ratio(0.5, rep="r2")
    await sink.publish([gone, ended], T0)
    await async_wait_until(lambda: len(send.records) == 2, 3.0)
    # r1 vanishes mid-window: a tombstone.
    await sink.publish([ended], T0 + 1)
    await async_wait_until(lambda: len(send.records) == 3, 3.0)
    assert send.records[-1] == ("sales.metrics.activity", key_of(gone).encode(), None)
    # r2 vanishes because its window is over: its last value goes out as final, then
    # the tombstone (nothing in the window that holds now).
    end = _bounds(ended).end
    await sink.publish([], end)
    await async_wait_until(lambda: len(send.records) == 5, 3.0)
    (topic, key, final), tombstone = send.records[3], send.records[4]
    assert key == key_of(ended).encode() and topic == "sales.metrics.activity"
    assert final["final"] is True and final["value"] == 0.5
    assert tombstone == (topic, key, None)
    await asyncio.sleep(0.1)
    assert len(send.records) == 5  # once


async def test_a_series_back_within_the_interval_gets_no_tombstone(
    make_sink, send: FakeSend
) -> None:
    """Coalesced like a value: a series missing from one snapshot (its partials on their
    way back after a window move) and back in the next sends nothing in between."""
    sink = make_sink(interval=0.5)
    await sink.start()
    await sink.publish([forecast(3.0)], T0)
    await async_wait_until(lambda: len(send.records) == 1, 3.0)
    await sink.publish([], T0 + 1)
    await asyncio.sleep(0.1)
    await sink.publish([forecast(3.0)], T0 + 2)
    await asyncio.sleep(0.6)
    assert [m for _, _, m in send.records] == [send.records[0][2]]


async def test_a_series_that_moved_to_another_worker_gets_no_tombstone(
    make_sink, send: FakeSend
) -> None:
    """A rebalance moved it: its new owner publishes it; a tombstone from here would
    delete it."""
    sink = make_sink(interval=0.02, owns=lambda metric, labels: labels["rep"] != "r1")
    await sink.start()
    await sink.publish([forecast(3.0, rep="r1"), forecast(4.0, rep="r2")], T0)
    await async_wait_until(lambda: len(send.records) == 2, 3.0)
    await sink.publish([], T0 + 1)
    await async_wait_until(lambda: len(send.records) == 3, 3.0)
    await asyncio.sleep(0.1)
    assert send.records[2] == ("sales.metrics.pipeline", key_of(forecast(0, "r2")).encode(), None)
    assert len(send.records) == 3


async def test_live_gauge_has_null_window(make_sink, send: FakeSend) -> None:
    sink = make_sink(interval=0.02)
    await sink.start()
    await sink.publish([forecast(10.0)], T0)
    await async_wait_until(lambda: len(send.records) == 1, 3.0)
    await sink.publish([forecast(12.5)], T0 + 1)
    await async_wait_until(lambda: len(send.records) == 2, 3.0)

    topic, key, message = send.records[-1]
    assert topic == "sales.metrics.pipeline"
    assert key == b'sales_forecast_value{rep="r1"}'
    assert message["window"] is None
    assert message["window_start"] is None and message["window_end"] is None
    assert message["labels"] == {"rep": "r1"}
    assert message["value"] == 12.5 and message["final"] is False


async def test_messages_validate_against_schema(make_sink, send: FakeSend) -> None:
    sink = make_sink(interval=0.02)
    await sink.start()
    await sink.publish([ratio(0.5), forecast(3.0)], T0)
    await async_wait_until(lambda: len(send.records) == 2, 3.0)
    await sink.publish([ratio(0.6, T0 + 60), forecast(4.0)], T0 + 60)
    await async_wait_until(lambda: len(send.records) == 5, 3.0)
    assert sum(m["final"] for _, _, m in send.records) == 1

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for _, _, message in send.records:
        validator.validate(message)
        assert message["emitted_at"].endswith("Z")


async def test_send_failure_never_raises_and_recovers(
    make_sink, send: FakeSend, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(interval=0.02)
    await sink.start()
    send.fail = True
    for value in (1.0, 2.0, 3.0):
        await sink.publish([forecast(value)], T0)
        await asyncio.sleep(0.1)
    await async_wait_until(lambda: sink.status["kafka"] == "down", 3.0)
    assert send.calls >= 3  # retried
    assert send.records == []

    send.fail = False
    await async_wait_until(lambda: len(send.records) == 1, 3.0)
    assert send.records[0][2]["value"] == 3.0  # retried with the latest value only
    assert sink.status["kafka"] == "up"
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage


async def test_hanging_send_does_not_slow_publish(make_sink, send: FakeSend) -> None:
    sink = make_sink(interval=0.02, send_timeout=0.1, stop_timeout=0.2)
    await sink.start()
    send.hang = True
    for value in range(20):
        started = time.perf_counter()
        await sink.publish([forecast(float(value))], T0)
        assert time.perf_counter() - started < 0.05
        await asyncio.sleep(0.01)
    await async_wait_until(lambda: sink.status["kafka"] == "down", 3.0)


async def test_stop_flushes_a_value_held_back_by_the_interval(make_sink, send: FakeSend) -> None:
    sink = make_sink(interval=30.0)
    await sink.start()
    await sink.publish([forecast(1.0)], T0)
    await async_wait_until(lambda: len(send.records) == 1, 3.0)
    await sink.publish([forecast(2.0)], T0 + 1)
    await asyncio.sleep(0.05)
    assert len(send.records) == 1  # held back: within the interval
    await sink.stop()
    assert [m["value"] for _, _, m in send.records] == [1.0, 2.0]


def _bounds(sample: Sample) -> WindowBounds:
    assert sample.window is not None
    return sample.window


def _rfc(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def test_a_month_ending_publishes_its_final_and_becomes_last_month(
    make_sink, send: FakeSend
) -> None:
    """The calendar periods: when the month ends, its last value goes out with
    ``final: true``; the same value is then the ``last_month`` series."""
    clock = WindowClock(ZoneInfo("UTC"), fiscal_start_month=4)
    november = datetime(2026, 11, 30, 23, 59, tzinfo=UTC).timestamp()
    december = november + 120

    def won(window: str, value: float, now: float) -> Sample:
        return Sample("sales_revenue_won", {"rep": "r1"}, clock.bounds(window, now), value)

    sink = make_sink(interval=0.02)
    await sink.start()
    await sink.publish([won("month", 5000.0, november)], november)
    month = key_of(won("month", 0.0, november))
    await async_wait_until(lambda: len(send.of(month)) == 1, 3.0)
    # December: nothing won yet this month; November's 5,000 is last month's
    await sink.publish([won("last_month", 5000.0, december)], december)
    last = key_of(won("last_month", 0.0, december))
    await async_wait_until(lambda: send.of(last) and len(send.of(month)) == 2, 3.0)
    final = send.of(month)[1]
    assert final["final"] is True and final["value"] == 5000.0
    assert (final["window_start"], final["window_end"]) == (
        _rfc(datetime(2026, 11, 1, tzinfo=UTC).timestamp()),
        _rfc(datetime(2026, 12, 1, tzinfo=UTC).timestamp()),
    )
    [previous] = send.of(last)
    assert previous["value"] == 5000.0 and previous["window"] == "last_month"
    assert previous["window_start"] == final["window_start"]
    assert previous["final"] is True  # outputs.md: final once the window is over


async def test_a_month_that_ended_before_the_worker_started_gets_its_final_too(
    make_sink, send: FakeSend
) -> None:
    """periods-and-targets.md: when a period ends, its ``final: true`` goes on the topics.
    A worker started (or taking the series over) after the 1st sent none for the month
    that ended: it closes it from ``last_month``, then the current value follows."""
    clock = WindowClock(ZoneInfo("UTC"), fiscal_start_month=4)
    december = datetime(2026, 12, 1, 0, 5, tzinfo=UTC).timestamp()

    def won(window: str, value: float, rep: str = "r1") -> Sample:
        return Sample("sales_revenue_won", {"rep": rep}, clock.bounds(window, december), value)

    sink = make_sink(interval=0.02)
    await sink.start()
    snapshot = [won("last_month", 5000.0), won("month", 300.0), won("last_month", 70.0, "r2")]
    await sink.publish(snapshot, december)
    month, other = key_of(won("month", 0.0)), key_of(won("month", 0.0, "r2"))
    await async_wait_until(lambda: len(send.of(month)) == 2 and len(send.of(other)) == 2, 3.0)
    final, current = send.of(month)
    assert final["final"] is True and final["value"] == 5000.0
    november = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert (final["window_start"], final["window_end"]) == tuple(
        _rfc(d.timestamp()) for d in november
    )
    # the current month's value after it: the key's latest record (compaction keeps it)
    assert not current["final"] and current["value"] == 300.0
    # r2 won nothing this month: its November final, then a tombstone
    assert send.of(other)[0]["final"] is True and send.of(other)[1] is None
    # once: the next snapshots do not close November again
    await sink.publish(snapshot, december + 1)
    await asyncio.sleep(0.2)
    assert len(send.of(month)) == 2 and len(send.of(other)) == 2


async def test_a_month_that_ended_days_before_the_start_is_not_closed_again(
    make_sink, send: FakeSend
) -> None:
    """A restart mid-month sends no final of last month again (its owner sent it when it
    ended): only a period that ended within ``CLOSE_LATE_SECONDS`` of the start is closed."""
    clock = WindowClock(ZoneInfo("UTC"))
    mid_december = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
    assert mid_december - datetime(2026, 12, 1, tzinfo=UTC).timestamp() > CLOSE_LATE_SECONDS

    def won(window: str, value: float) -> Sample:
        return Sample("sales_revenue_won", {"rep": "r1"}, clock.bounds(window, mid_december), value)

    sink = make_sink(interval=0.02)
    await sink.start()
    await sink.publish([won("last_month", 5000.0), won("month", 300.0)], mid_december)
    month, last = key_of(won("month", 0.0)), key_of(won("last_month", 0.0))
    await async_wait_until(lambda: len(send.of(month)) == 1 and len(send.of(last)) == 1, 3.0)
    await asyncio.sleep(0.2)
    [current] = send.of(month)
    assert not current["final"] and current["value"] == 300.0


async def test_a_late_final_is_followed_by_the_current_value_again(
    make_sink, send: FakeSend
) -> None:
    # last_month can come a round after this month's value (its owner merges partials):
    # the current value is then sent again, so that the final is not the key's latest
    clock = WindowClock(ZoneInfo("UTC"))
    december = datetime(2026, 12, 1, 0, 5, tzinfo=UTC).timestamp()

    def won(window: str, value: float) -> Sample:
        return Sample("sales_revenue_won", {"rep": "r1"}, clock.bounds(window, december), value)

    sink = make_sink(interval=0.02)
    await sink.start()
    month = key_of(won("month", 0.0))
    await sink.publish([won("month", 300.0)], december)
    await async_wait_until(lambda: len(send.of(month)) == 1, 3.0)
    await sink.publish([won("month", 300.0), won("last_month", 5000.0)], december + 1)
    await async_wait_until(lambda: len(send.of(month)) == 3, 3.0)
    first, final, latest = send.of(month)
    assert [m["final"] for m in (first, final, latest)] == [False, True, False]
    assert (final["value"], latest["value"]) == (5000.0, 300.0)
