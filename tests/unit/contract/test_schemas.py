"""The committed JSON Schemas match the models, are valid draft 2020-12 and accept real messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streamproc.contract.events import BusinessKind, EventKind
from streamproc.contract.outputs import Alert, DeadLetter, MetricMessage, series_key
from streamproc.contract.schemas import DIALECT, SCHEMA_FILES, write_schemas

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
AT = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)

EVENTS: dict[str, dict[str, Any]] = {
    "lead-created": {
        "event_id": "e-1",
        "occurred_at": "2024-05-06T09:30:00Z",
        "lead_id": "L-1",
        "rep_id": "r-1",
        "source": "google_ads",
        "estimated_value": 27600,
        "unknown": {"is": "ignored"},
    },
    "contact-attempted": {
        "event_id": "e-2",
        "occurred_at": "2024-05-06T11:31:00.250+02:00",
        "lead_id": "L-1",
        "rep_id": "r-1",
        "team_id": "emea",
        "channel": "email",
        "connected": False,
        "message_id": "m-1",
    },
    "stage-changed": {
        "event_id": "e-3",
        "occurred_at": "2024-05-06T09:40:00Z",
        "lead_id": "L-1",
        "rep_id": "r-1",
        "from_stage": None,
        "to_stage": "lost",
        "deal_value": 34500.5,
        "win_probability": 0,
        "lost_reason": "price",
    },
    "email-opened": {
        "event_id": "e-4",
        "occurred_at": "2024-05-06T09:45:00-05:00",
        "lead_id": "L-1",
        "message_id": "m-1",
        "clicked": True,
    },
    "cost-recorded": {
        "event_id": "e-5",
        "occurred_at": "2024-05-01T00:00:00Z",
        "amount": 3100,
        "category": "marketing",
        "source": "google_ads",
        "period_start": "2024-05-01T00:00:00Z",
        "period_end": "2024-06-01T00:00:00Z",
    },
    "customer-churned": {
        "event_id": "e-6",
        "occurred_at": "2024-05-06T10:00:00Z",
        "customer_id": "C-1",
        "reason": "price",
        "revenue_lost": 1200,
    },
    "nps-responded": {
        "event_id": "e-7",
        "occurred_at": "2024-05-06T10:00:00Z",
        "customer_id": "C-1",
        "score": 9,
    },
}


def load(name: str) -> Any:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_committed_schemas_match_the_models(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert [p.name for p in written] == list(SCHEMA_FILES)
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(SCHEMA_FILES), (
        "run streamproc.schemas.write_schemas(Path('schemas'))"
    )
    for path in written:
        assert (SCHEMAS / path.name).read_bytes() == path.read_bytes(), (
            f"schemas/{path.name} is stale: regenerate it with write_schemas"
        )


def test_generation_is_stable(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in write_schemas(tmp_path / "a")]
    second = [p.read_bytes() for p in write_schemas(tmp_path / "b")]
    assert first == second


@pytest.mark.parametrize("name", list(SCHEMA_FILES))
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    text = (SCHEMAS / name).read_text(encoding="utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DIALECT
    assert "$id" not in schema
    assert (
        text.endswith("}\n")
        and text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


def test_every_event_kind_has_a_schema() -> None:
    kinds = [*EventKind, *BusinessKind]
    assert {f"{kind.value}.schema.json" for kind in kinds} <= set(SCHEMA_FILES)


@pytest.mark.parametrize("kind", list(EVENTS))
def test_sample_events_validate(kind: str) -> None:
    validator(f"{kind}.schema.json").validate(EVENTS[kind])


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("lead-created", {"occurred_at": "2024-05-06T09:30:00"}),  # naive
        ("lead-created", {"occurred_at": 1714987800}),
        ("lead-created", {"rep_id": ""}),
        ("lead-created", {"lead_id": "x" * 129}),
        ("lead-created", {"estimated_value": -1}),
        ("lead-created", {"estimated_value": None}),
        ("lead-created", {"existing_customer": 1}),
        ("contact-attempted", {"channel": "fax"}),
        ("contact-attempted", {"connected": "true"}),
        ("contact-attempted", {"message_id": None}),
        ("stage-changed", {"win_probability": 1.5}),
        ("stage-changed", {"deal_value": "100"}),
        ("email-opened", {"clicked": "yes"}),
        ("lead-created", {"source": ""}),  # required; an optional text's "" is no value
        ("lead-created", {"customer_id": ""}),  # an id: 1-128 chars, optional or not
        ("stage-changed", {"products": [{"product_id": "p"}] * 101}),
        ("stage-changed", {"products": [{"product_id": "p", "quantity": 0}]}),
        ("stage-changed", {"products": [{"quantity": 1}]}),
        ("cost-recorded", {"amount": -1}),
        ("cost-recorded", {"category": "travel"}),
        ("cost-recorded", {"period_start": "2024-05-01T00:00:00"}),
        ("customer-churned", {"revenue_lost": -5}),
        ("customer-churned", {"customer_id": None}),
        ("nps-responded", {"score": 11}),
        ("nps-responded", {"score": 8.5}),
    ],
)
def test_invalid_events_fail_their_schema(kind: str, change: dict[str, Any]) -> None:
    assert not validator(f"{kind}.schema.json").is_valid(EVENTS[kind] | change)


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("lead-created", "source"),
        ("lead-created", "rep_id"),
        ("contact-attempted", "connected"),
        ("contact-attempted", "message_id"),  # channel is email
        ("stage-changed", "to_stage"),
        ("email-opened", "message_id"),
        ("email-opened", "occurred_at"),
    ],
)
def test_required_fields_in_schemas(kind: str, field: str) -> None:
    event = {k: v for k, v in EVENTS[kind].items() if k != field}
    assert not validator(f"{kind}.schema.json").is_valid(event)


def test_message_id_optional_off_email() -> None:
    event = EVENTS["contact-attempted"] | {"channel": "call"}
    del event["message_id"]
    validator("contact-attempted.schema.json").validate(event)


def test_stage_schema_documents_the_default_pipeline() -> None:
    schema = load("stage-changed.schema.json")
    assert "new, contacted, qualified, proposal, negotiation, won, lost" in json.dumps(schema)


def test_envelope_schema() -> None:
    check = validator("cloudevents-envelope.schema.json")
    envelope = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/crm",
        "type": "com.crm.lead",
        "time": "2024-05-06T09:30:00Z",
        "data": EVENTS["lead-created"],
    }
    check.validate(envelope)
    check.validate(envelope | {"time": None, "subject": None, "ext": 1})
    assert not check.is_valid(envelope | {"specversion": "0.3"})
    assert not check.is_valid(envelope | {"data": [1]})
    assert not check.is_valid({k: v for k, v in envelope.items() if k != "source"})


# --- outputs: model -> JSON -> schema ----------------------------------------------------------


def metric(**changes: Any) -> MetricMessage:
    fields: dict[str, Any] = {
        "metric": "sales_connect_ratio",
        "labels": {"rep": "r-1", "channel": "call"},
        "window": "1h",
        "window_start": datetime(2024, 5, 6, 8, 30, tzinfo=UTC),
        "window_end": AT,
        "value": 0.25,
        "final": False,
        "emitted_at": AT,
    }
    return MetricMessage(**(fields | changes))


def test_metric_messages_validate() -> None:
    check = validator("metric-message.schema.json")
    windowed = metric().model_dump(mode="json")
    assert windowed["window_start"] == "2024-05-06T08:30:00Z"
    check.validate(windowed)
    live = metric(metric="sales_forecast_value", window=None, window_start=None, window_end=None)
    check.validate(live.model_dump(mode="json"))
    assert not check.is_valid(windowed | {"window_start": None})
    assert not check.is_valid(live.model_dump(mode="json") | {"window_end": "2024-05-06T09:30:00Z"})
    assert not check.is_valid(windowed | {"window": "2h"})
    assert not check.is_valid(windowed | {"labels": {"rep": 1}})
    assert set(windowed) == {
        "metric",
        "labels",
        "window",
        "window_start",
        "window_end",
        "value",
        "final",
        "emitted_at",
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"window": None},  # a live gauge has no bounds
        {"window": None, "window_start": None, "window_end": None, "final": True},
        {"window_end": None},
        {"window_start": AT},  # empty window
        {"value": float("nan")},
        {"emitted_at": datetime(2024, 5, 6)},  # noqa: DTZ001 (naive on purpose)
    ],
)
def test_metric_message_rules(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        metric(**changes)


def test_metric_key_is_canonical() -> None:
    one = metric(labels={"rep": "r-1", "channel": "call"})
    two = metric(labels={"channel": "call", "rep": "r-1"})
    assert one.key == two.key == 'sales_connect_ratio{channel="call",rep="r-1",window="1h"}'
    live = metric(window=None, window_start=None, window_end=None, labels={"rep": 'a"b\\'})
    assert live.key == 'sales_connect_ratio{rep="a\\"b\\\\"}'
    assert series_key("m", {}) == "m{}"


def alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": Alert.make_id("response_sla_breached", 1, "L-1"),
        "kind": "response_sla_breached",
        "level": 1,
        "lead_id": "L-1",
        "rep_id": "r-1",
        "team_id": "default",
        "source": "google_ads",
        "lead_created_at": AT,
        "sla_seconds": 300,
        "waited_seconds": 301.5,
        "fired_at": datetime(2024, 5, 6, 9, 35, 1, 500000, tzinfo=UTC),
    }
    return Alert(**(fields | changes))


def test_alerts_validate() -> None:
    check = validator("alert.schema.json")
    breached = alert().model_dump(mode="json")
    check.validate(breached)
    assert breached["fired_at"] == "2024-05-06T09:35:01.500000Z"
    resolved = alert(kind="response_sla_resolved", level=2).model_dump(mode="json")
    check.validate(resolved)
    assert not check.is_valid(breached | {"level": 3})
    assert not check.is_valid(breached | {"kind": "response_sla_missed"})
    assert not check.is_valid({k: v for k, v in breached.items() if k != "alert_id"})
    with pytest.raises(ValueError):
        alert(level=3)


def test_alert_ids_are_deterministic() -> None:
    first = Alert.make_id("response_sla_breached", 1, "L-1")
    assert first == Alert.make_id("response_sla_breached", 1, "L-1")
    others = {
        Alert.make_id("response_sla_breached", 2, "L-1"),
        Alert.make_id("response_sla_resolved", 1, "L-1"),
        Alert.make_id("response_sla_breached", 1, "L-2"),
    }
    assert first not in others and len(others) == 3


def test_dead_letters_validate() -> None:
    check = validator("dead-letter.schema.json")
    text = DeadLetter.from_raw(
        reason="not JSON",
        topic="sales.lead-created",
        partition=3,
        offset=42,
        key=b"L-1",
        value=b"{nope",
        timestamp_ms=1714987800123,
    )
    assert (text.raw, text.raw_encoding, text.key) == ("{nope", "utf-8", "L-1")
    check.validate(text.model_dump(mode="json"))
    binary = DeadLetter.from_raw(
        reason="not JSON",
        topic="sales.lead-created",
        partition=0,
        offset=0,
        key=b"\xff",
        value=b"\xff\x00",
        timestamp_ms=None,
    )
    assert (binary.raw, binary.raw_encoding, binary.key) == ("/wA=", "base64", "\\xff")
    check.validate(binary.model_dump(mode="json"))
    empty = DeadLetter.from_raw(
        reason="empty message",
        topic="t",
        partition=0,
        offset=1,
        key=None,
        value=None,
        timestamp_ms=None,
    )
    assert (empty.raw, empty.key, empty.timestamp) == ("", None, None)
    check.validate(empty.model_dump(mode="json"))
    assert not check.is_valid(empty.model_dump(mode="json") | {"raw_encoding": "latin-1"})
