"""Live SLA alerts on a real broker: on time, once, escalated, resolved, and not on replays."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
import pytest

from streamproc.tools.net import free_port
from streamproc.tools.sales_team import rfc3339
from tests.support.harness import TopicReader, series, wait_until

pytestmark = pytest.mark.integration
SLA = 4.0


class AlertReader(TopicReader):
    """``sales.alerts`` from the start, with each alert's arrival time."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings, settings.topic("alerts"))

    def find(self, lead: str, kind: str, level: int) -> list[tuple[float, dict[str, Any]]]:
        return [
            (t, a)
            for t, _, a in self.records
            if a["lead_id"] == lead and a["kind"] == kind and a["level"] == level
        ]


def _created(producer, settings, lead: str, at: float, rep: str = "r1") -> None:  # type: ignore[no-untyped-def]
    event = {
        "event_id": f"{lead}-c",
        "occurred_at": rfc3339(at),
        "lead_id": lead,
        "rep_id": rep,
        "source": "web",
    }
    producer.produce(settings.topic("lead-created"), key=lead.encode(), value=orjson.dumps(event))
    producer.flush(5)


def _contact(producer, settings, lead: str, at: float) -> None:  # type: ignore[no-untyped-def]
    event = {
        "event_id": f"{lead}-a",
        "occurred_at": rfc3339(at),
        "lead_id": lead,
        "rep_id": "r1",
        "channel": "call",
        "connected": True,
    }
    producer.produce(
        settings.topic("contact-attempted"), key=lead.encode(), value=orjson.dumps(event)
    )
    producer.flush(5)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_breach_on_time_escalation_and_resolution(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    settings = settings_factory(response_sla_seconds=SLA)
    make_topics(settings)
    worker = worker_factory(settings)
    reader = AlertReader(settings)
    producer = kafka_producer()
    created = time.time()
    _created(producer, settings, "L1", created)
    wait_until(
        lambda: reader.poll() and reader.find("L1", "response_sla_breached", 2), timeout=3 * SLA + 5
    )
    [(arrived1, first)] = reader.find("L1", "response_sla_breached", 1)
    [(arrived2, second)] = reader.find("L1", "response_sla_breached", 2)
    assert 0 <= arrived1 - (created + SLA) <= 2.0  # within 2 s of the SLA, no other event
    assert 0 <= arrived2 - (created + 2 * SLA) <= 2.0
    assert first["rep_id"] == "r1" and first["sla_seconds"] == SLA
    assert second["waited_seconds"] >= 2 * SLA
    assert _ts(first["lead_created_at"]) == pytest.approx(created, abs=0.01)
    _contact(producer, settings, "L1", time.time())
    wait_until(lambda: reader.poll() and reader.find("L1", "response_sla_resolved", 2), timeout=10)
    reader.poll(1.5)
    ids = [a["alert_id"] for a in reader.values()]
    assert len(ids) == len(set(ids)) == 3
    samples = worker.samples()
    assert samples[series("streamproc_alerts_total", kind="response_sla_breached")] == 2
    assert samples[series("streamproc_alerts_total", kind="response_sla_resolved")] == 1
    reader.close()


def test_sigkill_between_breach_and_escalation_each_alert_once(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    sla = 6.0
    settings = settings_factory(response_sla_seconds=sla, partitions=2)
    make_topics(settings)
    first = worker_factory(settings, name="first")
    reader = AlertReader(settings)
    producer = kafka_producer()
    _created(producer, settings, "K1", time.time())
    _created(producer, settings, "K2", time.time())
    wait_until(
        lambda: (
            reader.poll()
            and len(reader.find("K1", "response_sla_breached", 1))
            + len(reader.find("K2", "response_sla_breached", 1))
            == 2
        ),
        timeout=sla + 5,
    )
    first.kill()
    worker_factory(
        settings.model_copy(update={"web_port": free_port()}), name="second", ready=False
    ).wait_ready(60)
    wait_until(
        lambda: (
            reader.poll()
            and len(reader.find("K1", "response_sla_breached", 2))
            + len(reader.find("K2", "response_sla_breached", 2))
            == 2
        ),
        timeout=60,
    )
    reader.poll(3)
    ids = [a["alert_id"] for a in reader.values()]
    assert len(ids) == 4 and len(set(ids)) == 4, ids
    reader.close()


def test_replay_of_an_hour_old_history_raises_no_alert_but_counts(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    settings = settings_factory(response_sla_seconds=300)
    make_topics(settings)
    worker = worker_factory(settings)
    reader = AlertReader(settings)
    producer = kafka_producer()
    hour_ago = time.time() - 3600
    for i in range(5):
        _created(producer, settings, f"old-{i}", hour_ago + i, rep="r9")
    over = series("sales_leads_awaiting_contact_over_sla", rep="r9")
    wait_until(lambda: worker.samples().get(over) == 5, timeout=20)
    time.sleep(2)  # two more rounds of the SLA watch
    assert reader.values() == [] and reader.poll(1) == []
    # The oldest wait is the age of the first lead, created an hour ago: now minus its time.
    oldest = series("sales_oldest_awaiting_contact_seconds", rep="r9")
    wait_until(lambda: oldest in worker.samples(), timeout=10)
    before = time.time() - hour_ago
    age = worker.samples()[oldest]
    after = time.time() - hour_ago
    assert before - 1.0 <= age <= after + 1.0, (before, age, after)
    reader.close()
