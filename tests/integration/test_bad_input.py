"""Hostile input among valid events: dead-lettered with a reason, counted, and harmless."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.tools.sales_team import rfc3339
from tests.support.harness import TopicReader, combined, parse_samples, series, wait_until

pytestmark = pytest.mark.integration

KINDS = ["lead-created", "contact-attempted", "stage-changed", "email-opened"]


def _valid(kind: str, lead: str, rep: str, n: int) -> dict[str, Any]:
    base = {"event_id": f"{lead}-{n}", "occurred_at": rfc3339(time.time() - 60), "lead_id": lead}
    extra = {
        "lead-created": {"rep_id": rep, "source": "fuzz"},
        "contact-attempted": {"rep_id": rep, "channel": "call", "connected": True},
        "stage-changed": {"rep_id": rep, "from_stage": None, "to_stage": "qualified"},
        "email-opened": {"message_id": "m1"},
    }[kind]
    return base | extra


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


HOSTILE = st.one_of(
    st.binary(max_size=200).map(lambda b: (None, b)),  # not JSON, invalid UTF-8, anything
    st.sampled_from([b"null", b"[]", b"42", b'"text"', b"{}"]).map(lambda b: (None, b)),
    st.just((None, _deep(5000))),  # deep nesting
    st.builds(
        lambda kind, bad: (kind, bad),
        st.sampled_from(KINDS),
        st.sampled_from(["wrong_types", "long_id", "future", "key_mismatch", "naive_time"]),
    ),
)


def _hostile(kind: str | None, spec: Any, lead: str, n: int) -> tuple[str, bytes, bytes]:
    kind = kind or "lead-created"
    if isinstance(spec, bytes):
        return kind, lead.encode(), spec
    event = _valid(kind, lead, "fuzz-rep", n)
    key = lead.encode()
    if spec == "wrong_types":
        event["occurred_at"] = 12345
        event["lead_id"] = ["not", "a", "string"]
    elif spec == "long_id":
        event["event_id"] = "x" * 129
    elif spec == "future":
        event["occurred_at"] = rfc3339(time.time() + 3600)
    elif spec == "key_mismatch":
        key = b"someone-else"
    elif spec == "naive_time":
        event["occurred_at"] = "2026-01-01T10:00:00"
    return kind, key, orjson.dumps(event)


def _dead_letters(settings_: Any, count_at_least: int) -> list[dict[str, Any]]:
    reader = TopicReader(settings_, settings_.topic("dead-letter"))
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: len(reader.poll()) >= count_at_least, timeout=30)
    reader.poll(1)  # and nothing more than that
    reader.close()
    return reader.values()


def _one_worker(settings_factory: Any, make_topics: Any, worker_factory: Any) -> tuple[Any, Any]:
    """Settings of two partitions, their topics, and a worker on them."""
    config = settings_factory(partitions=2)
    make_topics(config)
    return config, worker_factory(config)


def test_hostile_messages_are_dead_lettered_and_valid_ones_counted_exactly(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    config, worker = _one_worker(settings_factory, make_topics, worker_factory)
    producer = kafka_producer()
    sent = {"valid_leads": 0, "bad": 0}
    run = uuid.uuid4().hex[:6]

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(HOSTILE, min_size=1, max_size=12), st.integers(1, 6))
    def throw(hostile: list[tuple[str | None, Any]], valid: int) -> None:
        for i in range(valid):
            lead = f"ok-{run}-{sent['valid_leads']}"
            sent["valid_leads"] += 1
            event = _valid("lead-created", lead, "fuzz-rep", i)
            producer.produce(
                config.topic("lead-created"), key=lead.encode(), value=orjson.dumps(event)
            )
        for i, (kind, spec) in enumerate(hostile):
            topic_kind, key, value = _hostile(kind, spec, f"bad-{run}-{sent['bad']}", i)
            producer.produce(config.topic(topic_kind), key=key, value=value)
            sent["bad"] += 1
        producer.flush(10)

    throw()
    created = series("sales_leads_created", window="1h", rep="fuzz-rep", source="fuzz")

    def settled() -> bool:
        samples = worker.samples()
        invalid = sum(
            v
            for (n, labels), v in samples.items()
            if n == "streamproc_events_total" and ("outcome", "invalid") in labels
        )
        return samples.get(created) == sent["valid_leads"] and invalid == sent["bad"]

    wait_until(settled, timeout=60, interval=0.5)
    assert worker.get("/healthz")[0] == 200
    assert worker.ready()
    letters = _dead_letters(config, sent["bad"])
    assert len(letters) == sent["bad"]
    for letter in letters:
        assert letter["reason"] and "\n" not in letter["reason"]
        assert letter["topic"].startswith(config.topic_prefix)
        assert letter["partition"] >= 0 and letter["offset"] >= 0
    total, _ = combined([worker])
    assert total[created] == sent["valid_leads"]
    assert parse_samples(worker.metrics_text())  # still scrapes


def _outcome_counts(worker: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in worker.samples().items():
        if name == "streamproc_events_total":
            outcome = dict(labels)["outcome"]
            out[outcome] = out.get(outcome, 0) + value
    return out


def test_poison_numbers_and_times_leave_the_worker_running_and_counting(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    # The black-box finds: two deals of 1e308 crashed the worker (revenue inf, a null
    # total in the partials); a cost of year 1 had its batch read again forever; old
    # business events counted "processed". Valid events after them must count.
    config, worker = _one_worker(settings_factory, make_topics, worker_factory)
    producer = kafka_producer()
    now = rfc3339(time.time() - 60)
    old = "2001-06-01T12:00:00Z"  # before the start of last_year: late
    sent: list[tuple[str, str, dict[str, Any]]] = []
    for i in (1, 2):
        lead = {"event_id": f"v{i}", "lead_id": f"V{i}", "rep_id": "r", "occurred_at": now}
        sent.append(("lead-created", f"V{i}", lead | {"source": "web"}))
        won = lead | {"event_id": f"w{i}", "to_stage": "won", "deal_value": 1e308}
        sent.append(("stage-changed", f"V{i}", won))
    year_one = {"period_start": "0001-01-01T00:00:00+14:00", "period_end": "0001-01-03T00:00:00Z"}
    cost = {"event_id": "c1", "amount": 1, "category": "other", "occurred_at": now}
    sent.append(("cost-recorded", "c1", cost | year_one))
    sent.append(
        ("customer-churned", "Z", {"event_id": "h1", "customer_id": "Z", "occurred_at": old})
    )
    ok = {"event_id": "ok", "lead_id": "OK", "rep_id": "ok", "source": "web", "occurred_at": now}
    sent.append(("lead-created", "OK", ok))
    sent.append(
        ("cost-recorded", "c2", cost | {"event_id": "c2", "amount": 5, "category": "sales"})
    )
    for kind, key, event in sent:
        producer.produce(config.topic(kind), key=key.encode(), value=orjson.dumps(event))
    assert producer.flush(10) == 0
    cost_today = series("sales_cost", window="today", category="sales", source="none")
    created = series("sales_leads_created", window="today", rep="ok", source="web")

    def settled() -> bool:
        samples = worker.samples()
        return samples.get(cost_today) == 5 and samples.get(created) == 1

    wait_until(settled, timeout=60, interval=0.5)
    assert worker.get("/healthz")[0] == 200 and worker.ready()
    assert _outcome_counts(worker) == {"processed": 4, "invalid": 2, "late": 2}
    reasons = [letter["reason"] for letter in _dead_letters(config, 2)]
    assert reasons == ["deal_value is above 1e15, the largest number accepted: send amounts "
                       "in units of the reporting currency (not scaled), and fix the producer "
                       "that sent this"] * 2  # fmt: skip


def test_keyless_contacts_reach_their_leads(
    settings_factory, make_topics, two_workers, kafka_producer
) -> None:
    """events.md keys lead events by ``lead_id`` and takes a message without one: the
    producer puts it on any partition, maybe another worker's than its lead's. Keyed by
    librdkafka's default partitioner (the default ``STREAMPROC_KEYLESS_PARTITIONER``), each
    lead's keyless contact still meets its lead: every lead has its first contact, none
    waits, each contact counted once."""
    config = settings_factory(partitions=4)
    make_topics(config)
    workers = two_workers(config)
    producer = kafka_producer()
    now = time.time()
    leads = [f"K{i}" for i in range(12)]
    for i, lead in enumerate(leads):
        created = {"event_id": f"c{i}", "lead_id": lead, "rep_id": "k", "source": "web"}
        created["occurred_at"] = rfc3339(now - 120)
        producer.produce(
            config.topic("lead-created"), key=lead.encode(), value=orjson.dumps(created)
        )
    for i, lead in enumerate(leads):
        contact = {"event_id": f"a{i}", "lead_id": lead, "rep_id": "k", "channel": "call"}
        contact |= {"connected": True, "occurred_at": rfc3339(now - 60)}
        producer.produce(config.topic("contact-attempted"), value=orjson.dumps(contact))
    assert producer.flush(10) == 0
    first = series("sales_first_contacts", window="today", rep="k")
    waiting = series("sales_leads_awaiting_contact", rep="k")

    def contacted() -> bool:
        total = combined(workers)[0]
        return total.get(first) == len(leads) and not total.get(waiting)

    wait_until(contacted, timeout=60, interval=0.5)
    outcomes: dict[str, float] = {}
    for worker in workers:
        for outcome, n in _outcome_counts(worker).items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
    assert outcomes == {"processed": 2 * len(leads)}
