"""The business outcome KPIs end to end: an external confluent-kafka producer, the real broker
(tansu), real workers; the issue's scenario by hand, with hostile variants dead-lettered, on
one worker, on two scraped together, and after a SIGKILL and a take-over."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka import Producer

from streamproc.config import Settings
from streamproc.engine.windows import PERIODS, WindowClock
from streamproc.kafka.topics import topic_names
from streamproc.kpis.catalogue import KPIS
from tests.support.business import BusinessScenario, SeriesKey, is_customer_metric, key_of
from tests.support.faults import Message, dead_letter_report, wait_settled
from tests.support.harness import (
    TopicReader,
    WorkerProcess,
    combined,
    select,
    series,
    wait_until,
)
from tests.support.restated import (
    ABSENT_1H,
    ABSENT_TODAY,
    EXPECTED_1H,
    EXPECTED_TODAY,
    OLDEST_ZERO,
    RestatedScenario,
    labels_of,
)
from tests.support.scenario import Scenario, expected, noon_zone

_COMPACT = {"cleanup.policy": "compact"}

pytestmark = pytest.mark.integration

WHEN = "2024-05-06T09:30:00Z"
# Each new event's hostile variants: dead-lettered, the worker healthy, no KPI changed.
HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("cost-recorded", {"amount": -5, "category": "marketing"}),
    (
        "cost-recorded",
        {
            "amount": 5,
            "category": "marketing",
            "period_start": "2024-06-01T00:00:00Z",
            "period_end": "2024-05-01T00:00:00Z",
        },
    ),
    ("nps-responded", {"customer_id": "CUST-A", "score": 11}),
    ("customer-churned", {"customer_id": "CUST-A", "revenue_lost": -1}),
    (
        "stage-changed",
        {
            "lead_id": "G1",
            "rep_id": "r1",
            "to_stage": "won",
            "products": [{"product_id": "crm"}] * 10_000,
        },
    ),
]


def _settings(settings_factory: Callable[..., Settings], now: float) -> Settings:
    return settings_factory(timezone=noon_zone(now), partitions=3)


def _scenario(settings: Settings) -> BusinessScenario:
    clock = WindowClock(ZoneInfo(settings.timezone), settings.fiscal_year_start_month)
    return BusinessScenario(time.time(), clock)


def _produce(producer: Producer, scenario: BusinessScenario, settings: Settings) -> list[Message]:
    """The scenario, a quarter of it twice, then the hostile variants (returned)."""
    for kind, event in scenario.events:
        producer.produce(settings.topic(kind), key=key_of(kind, event), value=orjson.dumps(event))
    for kind, event in scenario.events[::4]:  # a quarter sent twice
        producer.produce(settings.topic(kind), key=key_of(kind, event), value=orjson.dumps(event))
    hostile = []
    for i, (kind, fields) in enumerate(HOSTILE):
        event = {"event_id": f"hostile-{i}", "occurred_at": WHEN} | fields
        message = Message(settings.topic(kind), key_of(kind, event), orjson.dumps(event), None)
        producer.produce(message.topic, key=message.key, value=message.value)
        hostile.append(message)
    assert producer.flush(10) == 0
    return hostile


def _kpis(samples: dict[Any, float]) -> dict[SeriesKey, float]:
    return {
        (name, tuple(sorted(labels))): value
        for (name, labels), value in samples.items()
        if is_customer_metric(name)
    }


def _differences(workers: list[WorkerProcess], truth: dict[SeriesKey, float]) -> dict[str, Any]:
    total, _ = combined(workers)
    got = _kpis(total)
    wrong = {
        k: (got.get(k), v) for k, v in truth.items() if got.get(k) != pytest.approx(v, abs=1e-5)
    }
    extra = sorted(set(got) - set(truth))
    return {"wrong (got, want)": wrong, "extra": extra} if wrong or extra else {}


def _settle(workers: list[WorkerProcess], truth: dict[SeriesKey, float], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):  # the assertion below says what differs
        wait_until(lambda: not _differences(workers, truth), timeout=timeout)
    assert not _differences(workers, truth)


def _outcomes(workers: list[WorkerProcess]) -> dict[str, float]:
    out: dict[str, float] = {}
    for worker in workers:
        for (_, labels), value in select(worker.samples(), "streamproc_events_total").items():
            key = dict(labels)["outcome"]
            out[key] = out.get(key, 0) + value
    return out


def test_the_issue_scenario_on_one_worker_with_hostile_input_dead_lettered(
    settings_factory, make_topics, worker_factory, kafka_producer, redis_server_factory
) -> None:
    redis_server = redis_server_factory()
    settings = _settings(settings_factory, time.time()).model_copy(
        update={"redis_url": redis_server.url}
    )
    scenario = _scenario(settings)
    make_topics(settings)
    worker = worker_factory(settings)
    hostile = _produce(kafka_producer(), scenario, settings)
    _settle([worker], scenario.expected(), timeout=40)
    # Each hostile variant on the dead-letter topic, once; nothing else there.
    report = dead_letter_report(settings, hostile)
    assert (report.missing, report.unexpected, report.duplicated) == ([], [], {})
    assert _outcomes([worker])["invalid"] == len(HOSTILE)
    assert worker.get("/healthz")[0] == 200 and worker.get("/readyz")[0] == 200
    # The same values whole on /kpis (the team's NPS with labels {}) and on the metric topic.
    status, body = worker.get("/kpis?metric=sales_nps_score&window=today")
    assert status == 200
    scores = {tuple(sorted(k["labels"].items())): k["value"] for k in orjson.loads(body)["kpis"]}
    assert scores == {(): 30.0, (("rep", "r1"),): 33.333333, (("rep", "r2"),): 33.333333,
                      (("rep", "r3"),): 0.0}  # fmt: skip
    reader = TopicReader(settings, settings.topic("metrics.customers"))

    def churn_today() -> object:
        reader.poll()
        return next(
            (m["value"] for m in reader.latest().values()
             if m["metric"] == "sales_churn_ratio" and m["window"] == "today"),
            None,
        )  # fmt: skip

    try:
        assert wait_until(lambda: churn_today() == 0.4, timeout=20)
    finally:
        reader.close()
    # And in the Redis snapshot.
    client = redis.Redis.from_url(redis_server.url)
    try:

        def active_smb() -> object:
            raw = client.hget("streamproc:kpi:sales_customers_active", 'segment="smb"')
            return raw and orjson.loads(raw)["value"]

        assert wait_until(lambda: active_smb() == 5, timeout=20)
    finally:
        client.close()


def test_two_workers_then_a_sigkill_and_a_take_over(
    settings_factory, make_topics, two_workers, kafka_producer
) -> None:
    settings = _settings(settings_factory, time.time())
    scenario = _scenario(settings)
    make_topics(settings)
    first, second = two_workers(settings)
    _produce(kafka_producer(), scenario, settings)
    truth = scenario.expected()
    _settle([first, second], truth, timeout=60)
    exporters = combined([first, second])[1]
    whole = {
        k: n for k, n in exporters.items() if is_customer_metric(k[0]) and not KPIS[k[0]].split
    }
    assert whole and set(whole.values()) == {1}, whole  # each whole series by its owner alone
    first.kill()
    # Not the second worker's view of the killed one's last partials: only once it holds
    # every partition, recovered from the changelogs, is it asked for the same numbers.
    wait_settled([second], settings.partitions, timeout=90)
    _settle([second], truth, timeout=90)


def test_a_customer_compacted_by_its_worker_is_taken_over_exact(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    """Answers and a cost from before ``last_year`` (800 days old): in no window, dropped
    from their customers by the worker's sweep and changelogged so; a worker with an empty
    data dir reads the compacted states and serves the same numbers."""
    settings = _settings(settings_factory, time.time()).model_copy(
        update={"prune_interval_seconds": 1.0}
    )
    scenario = _scenario(settings)
    make_topics(settings)
    first = worker_factory(settings, name="first")
    producer = kafka_producer()
    _produce(producer, scenario, settings)
    long_ago = datetime.fromtimestamp(time.time() - 800 * 86400, UTC).isoformat()
    for i, (kind, fields) in enumerate(
        [
            ("nps-responded", {"customer_id": "CUST-A", "score": 0}),
            ("nps-responded", {"customer_id": "CUST-C", "score": 10}),
            ("cost-recorded", {"customer_id": "CUST-B", "amount": 99, "category": "service"}),
        ]
    ):
        event = {"event_id": f"old-{i}", "occurred_at": long_ago} | fields
        producer.produce(settings.topic(kind), key=key_of(kind, event), value=orjson.dumps(event))
    assert producer.flush(10) == 0
    truth = scenario.expected()
    _settle([first], truth, timeout=40)
    assert wait_until(lambda: _compacted(first) == 3, timeout=30)
    first.kill()
    second = worker_factory(settings, name="second")  # an empty data dir: the changelog
    _settle([second], truth, timeout=60)
    time.sleep(3)  # three sweeps: what it read was compacted (else it would compact it)
    assert _compacted(second) == 0


def test_a_deal_won_again_an_upsell_and_a_contacted_lead_on_a_worker(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    """tests/support/restated.py through a worker: a second won event of a won deal is no
    second win, a move to the stage a deal is in (won, proposal, lost) no entry, exit or
    response, a win from an existing customer buys no new customer, and the oldest wait
    of a rep whose leads were all contacted reads 0."""
    now = time.time()
    settings = _settings(settings_factory, now)
    make_topics(settings)
    worker = worker_factory(settings)
    producer = kafka_producer()
    for kind, event in RestatedScenario(now).events():
        producer.produce(settings.topic(kind), key=key_of(kind, event), value=orjson.dumps(event))
    assert producer.flush(10) == 0
    want = {
        series(metric, window=window, **labels_of(labels)): value
        for window, expected in (("today", EXPECTED_TODAY), ("1h", EXPECTED_1H))
        for (metric, labels), value in expected.items()
    }
    want |= {series("sales_oldest_awaiting_contact_seconds", rep=rep): 0 for rep in OLDEST_ZERO}
    absent = [
        series(m, window=window, **labels_of(labels))
        for window, gone in (("today", ABSENT_TODAY), ("1h", ABSENT_1H))
        for m, labels in gone
    ]
    absent.append(series("sales_oldest_awaiting_contact_seconds", rep="x"))

    def differences() -> dict[Any, Any]:
        got = worker.samples()
        wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != pytest.approx(v)}
        return wrong | {k: (got[k], None) for k in absent if k in got}

    with contextlib.suppress(TimeoutError):  # the assertion below says what differs
        wait_until(lambda: not differences(), timeout=40)
    assert differences() == {}


def _compacted(worker: WorkerProcess) -> int:
    """Customers the worker's sweeps compacted, from its log."""
    return sum(int(n) for n in re.findall(r"forgot \d+ customers, compacted (\d+)", worker.log()))


def test_without_the_business_topics_the_worker_runs_as_before(
    settings_factory, worker_factory, kafka_producer
) -> None:
    """Only the topics of before (no business topics, no internal customers topic): the
    lead KPIs are exact, no customer series appears, and the worker creates no new topic."""
    lead = Scenario()
    settings = settings_factory(timezone=noon_zone(lead.now), activity_targets={"r1": 10})
    names = topic_names(settings)
    optional = {*names.business.values(), names.customers}
    asyncio.run(_create_only(settings, [n for n in names.all() if n not in optional]))
    worker = worker_factory(settings)
    producer = kafka_producer()
    for topic, key, value in lead.messages(settings.topic_prefix):
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0
    # the customers' KPIs that won deals alone feed need the internal customers topic
    customers = ("sales_customers_active", "sales_customer_revenue", "sales_customer_profit")
    truth = {k: v for k, v in expected().items() if k[0] not in customers}

    def lead_kpis() -> dict[SeriesKey, float]:
        return {
            (name, tuple(sorted(labels))): value
            for (name, labels), value in worker.samples().items()
            if name.startswith("sales_")
            and name != "sales_oldest_awaiting_contact_seconds"
            and not {("window", p) for p in PERIODS} & set(labels)
        }

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: lead_kpis() == pytest.approx(truth, abs=1e-5), timeout=30)
    assert lead_kpis() == pytest.approx(truth, abs=1e-5)
    assert asyncio.run(_existing(settings)).isdisjoint(optional)


async def _create_only(settings: Settings, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker_hosts)
    await admin.start()
    try:
        compacted = set(topic_names(settings).compacted)
        await admin.create_topics(
            [
                NewTopic(
                    t, settings.partitions, 1, topic_configs=_COMPACT if t in compacted else {}
                )
                for t in topics
            ]
        )
    finally:
        await admin.close()


async def _existing(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker_hosts)
    await admin.start()
    try:
        return {t["topic"] for t in await admin.describe_topics()}
    finally:
        await admin.close()
