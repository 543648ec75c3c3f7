"""Every KPI of the catalogue, end to end: an external producer, a real broker, real workers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import Producer

from streamproc.config import Settings
from streamproc.engine.windows import PERIODS
from tests.support.harness import WorkerProcess, combined, parse_samples, select, series, wait_until
from tests.support.scenario import OLDEST, Scenario, expected, noon_zone

pytestmark = pytest.mark.integration

BAD = [b"not json", b"[1, 2]", b'{"event_id": 5}', b"\xff\xfe"]


def _produce(producer: Producer, scenario: Scenario, settings: Settings) -> None:
    for topic, key, value in scenario.messages(settings.topic_prefix):
        producer.produce(topic, key=key, value=value)
    for bad in BAD:
        producer.produce(settings.topic("lead-created"), key=b"bad", value=bad)
    producer.flush(10)


def _settings(settings_factory: Callable[..., Settings], scenario: Scenario) -> Settings:
    return settings_factory(
        timezone=noon_zone(scenario.now), activity_targets={"r1": 10}, partitions=4
    )


def _kpis(samples: dict) -> dict:  # type: ignore[type-arg]
    return {
        (name, tuple(sorted(labels))): value
        for (name, labels), value in samples.items()
        if name.startswith("sales_")
        and name != "sales_oldest_awaiting_contact_seconds"
        and not {("window", period) for period in PERIODS} & set(labels)
    }


def _assert_truth(total: dict, scenario: Scenario) -> None:  # type: ignore[type-arg]
    truth = expected()
    got = _kpis(total)
    missing = sorted(set(truth) - set(got))
    extra = sorted(set(got) - set(truth))
    assert not missing, f"missing series: {missing}"
    assert not extra, f"unexpected series: {extra}"
    wrong = {k: (got[k], v) for k, v in truth.items() if got[k] != pytest.approx(v, abs=1e-5)}
    assert not wrong, f"wrong values (got, want): {wrong}"
    elapsed = time.time() - scenario.now
    for rep, age in OLDEST.items():
        value = total[series("sales_oldest_awaiting_contact_seconds", rep=rep)]
        assert age <= value <= age + elapsed + 1


def _settled(workers: list[WorkerProcess]) -> Callable[[], object]:
    truth = expected()

    def check() -> object:
        total, _ = combined(workers)
        return set(truth) <= set(_kpis(total)) and all(
            _kpis(total)[k] == pytest.approx(v, abs=1e-5) for k, v in truth.items()
        )

    return check


def test_every_kpi_by_hand_on_one_worker(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    scenario = Scenario()
    settings = _settings(settings_factory, scenario)
    make_topics(settings)
    worker = worker_factory(settings)
    _produce(kafka_producer(), scenario, settings)
    with contextlib.suppress(TimeoutError):  # the assertions below say what differs
        wait_until(_settled([worker]), timeout=30)
    samples = worker.samples()
    _assert_truth(samples, scenario)
    events = select(samples, "streamproc_events_total")
    outcome = {}
    for (_, labels), value in events.items():
        key = dict(labels)["outcome"]
        outcome[key] = outcome.get(key, 0) + value
    assert outcome["invalid"] == len(BAD)
    assert outcome.get("late", 0) == Scenario.LATE
    assert outcome["processed"] + outcome.get("late", 0) == len(scenario.events)
    assert outcome["duplicate"] == len(scenario.events[::5])


def test_two_workers_split_counts_and_export_each_whole_series_once(
    settings_factory, make_topics, two_workers, kafka_producer
) -> None:
    scenario = Scenario()
    settings = _settings(settings_factory, scenario)
    make_topics(settings)
    first, second = two_workers(settings)
    _produce(kafka_producer(), scenario, settings)
    workers = [first, second]
    with contextlib.suppress(TimeoutError):
        wait_until(_settled(workers), timeout=45)
    total, exporters = combined(workers)
    _assert_truth(total, scenario)
    whole = ("ratio", "_seconds", "revenue_per_rep")
    twice = [
        k
        for k, n in exporters.items()
        if k[0].startswith("sales_") and n > 1 and any(w in k[0] for w in whole)
    ]
    assert not twice, f"whole series exported by both workers: {twice}"
    # one URL answers for all: each worker's /kpis returns every rep's forecast
    for worker in workers:
        status, body = worker.get("/kpis?metric=sales_forecast_value")
        answer = orjson.loads(body)
        assert status == 200 and answer["complete"] and answer["workers"] == 2
        got = {row["labels"]["rep"]: row["value"] for row in answer["kpis"]}
        assert got == {"r1": 31947.0, "r3": 500.0}
    # a typo is a 400 naming it, not an empty answer that looks like "no data yet"
    status, body = first.get("/kpis?metric=nope")
    assert status == 400 and orjson.loads(body)["error"] == "unknown metric 'nope'"
    status, body = first.get("/kpis?window=bogus")
    assert status == 400 and "today" in orjson.loads(body)["valid"]
    # the work really is shared: each worker exports some KPI series
    assert all(select(parse_samples(w.metrics_text()), "sales_leads_created") for w in workers)
