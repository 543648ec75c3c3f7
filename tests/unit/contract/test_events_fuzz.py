"""Property tests of EventParser.parse: any bytes give a model or InvalidEvent; valid ones parse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.config import DEFAULT_STAGES, Settings
from streamproc.contract.events import (
    EVENT_MODELS,
    ContactAttempted,
    EmailOpened,
    EventKind,
    EventParser,
    LeadCreated,
    StageChanged,
)
from streamproc.exceptions import InvalidEvent

NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
PARSER = EventParser(Settings(_env_file=None))  # type: ignore[call-arg]
KINDS = st.sampled_from(list(EventKind))
FIELDS = [
    "event_id",
    "occurred_at",
    "lead_id",
    "rep_id",
    "team_id",
    "source",
    "existing_customer",
    "estimated_value",
    "channel",
    "connected",
    "message_id",
    "from_stage",
    "to_stage",
    "deal_value",
    "win_probability",
    "lost_reason",
    "clicked",
    "specversion",
    "id",
    "type",
    "time",
    "data",
    "ce_type",
    "ce_source",
]


def parse_or_invalid(kind: EventKind, key: bytes | None, raw: bytes) -> Any:
    """The property: a model of the kind, or InvalidEvent with a one-line reason; nothing else."""
    try:
        event = PARSER.parse(kind, key, raw, NOW)
    except InvalidEvent as exc:
        assert exc.reason and "\n" not in exc.reason and len(exc.reason) <= 300
        return exc
    assert type(event) is EVENT_MODELS[kind]
    assert event.ts <= NOW + 300
    return event


# --- arbitrary input ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=200)
)
json_trees = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), inner, max_size=8)
    ),
    max_leaves=30,
)


@given(kind=KINDS, key=st.none() | st.binary(max_size=20), raw=st.binary(max_size=300))
def test_arbitrary_bytes(kind: EventKind, key: bytes | None, raw: bytes) -> None:
    parse_or_invalid(kind, key, raw)


@given(kind=KINDS, tree=json_trees)
def test_arbitrary_json_trees(kind: EventKind, tree: Any) -> None:
    parse_or_invalid(kind, None, orjson.dumps(tree))


@given(kind=KINDS, raw=st.text(alphabet='{}[]":,0123456789.eE+-tfnrulasx\\ ', max_size=200))
def test_json_like_noise(kind: EventKind, raw: str) -> None:
    parse_or_invalid(kind, None, raw.encode())


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * 10_000,
        b'{"specversion":"1.0","id":"x","source":"s","type":"t","data":'
        + b'{"a":' * 10_000
        + b"1"
        + b"}" * 10_001,
    ],
    ids=["arrays", "objects", "unclosed", "in-envelope"],
)
def test_deep_nesting(kind: EventKind, raw: bytes) -> None:
    assert isinstance(parse_or_invalid(kind, None, raw), InvalidEvent)


def with_raw_fields(kind: EventKind, **raw_values: bytes) -> bytes:
    """A valid event's JSON with some fields set to raw JSON text (deeper than orjson writes)."""
    fields = {k: v for k, v in valid_fields(kind).items() if k not in raw_values}
    extra = b"".join(b',"' + name.encode() + b'":' + text for name, text in raw_values.items())
    return orjson.dumps(fields)[:-1] + extra + b"}"


DECODABLE_DEPTH = 1000  # just under orjson's decoder limit (1024 levels)


@pytest.mark.parametrize("kind", list(EventKind))
def test_deep_but_decodable_nesting_inside_a_field(kind: EventKind) -> None:
    deep = b"[" * DECODABLE_DEPTH + b"1" + b"]" * DECODABLE_DEPTH
    raw = with_raw_fields(kind, lead_id=deep, message_id=deep, extra=deep)
    result = parse_or_invalid(kind, None, raw)
    assert isinstance(result, InvalidEvent) and result.reason.startswith("lead_id must be")


def test_deep_nesting_in_an_unknown_field_is_ignored() -> None:
    deep = b'{"a":' * DECODABLE_DEPTH + b"{}" + b"}" * DECODABLE_DEPTH
    raw = with_raw_fields(EventKind.LEAD_CREATED, extra=deep)
    assert isinstance(parse_or_invalid(EventKind.LEAD_CREATED, None, raw), LeadCreated)


# --- near-valid input: one field replaced by anything ------------------------------------------


@given(
    kind=KINDS,
    name=st.sampled_from(FIELDS),
    value=json_trees | st.text(min_size=129, max_size=2000) | st.integers(),
)
def test_one_field_mistyped(kind: EventKind, name: str, value: Any) -> None:
    raw = json.dumps(valid_fields(kind) | {name: value})  # json: any int, not only 64-bit ones
    parse_or_invalid(kind, None, raw.encode())


@given(
    kind=KINDS,
    name=st.sampled_from(["event_id", "lead_id", "rep_id", "team_id"]),
    length=st.integers(min_value=129, max_value=100_000),
)
@settings(max_examples=30)
def test_over_long_ids(kind: EventKind, name: str, length: int) -> None:
    result = parse_or_invalid(kind, None, orjson.dumps(valid_fields(kind) | {name: "x" * length}))
    assert isinstance(result, InvalidEvent)
    assert result.reason == f"{name} is longer than 128 chars"


@given(kind=KINDS, key=st.binary(max_size=200))
def test_any_key(kind: EventKind, key: bytes) -> None:
    result = parse_or_invalid(kind, key, orjson.dumps(valid_fields(kind)))
    assert isinstance(result, InvalidEvent) == (key != b"L-1")


@given(number=st.integers() | st.floats(allow_nan=False, allow_infinity=False))
def test_any_number_as_probability(number: float) -> None:
    raw = json.dumps(valid_fields(EventKind.STAGE_CHANGED) | {"win_probability": number})
    result = parse_or_invalid(EventKind.STAGE_CHANGED, None, raw.encode())
    assert isinstance(result, StageChanged) == (0 <= number <= 1)


# --- valid events always parse -----------------------------------------------------------------


def valid_fields(kind: EventKind) -> dict[str, Any]:
    common = {"event_id": "e", "occurred_at": "2024-05-06T09:30:00Z", "lead_id": "L-1"}
    return (
        common
        | {
            EventKind.LEAD_CREATED: {"rep_id": "r", "source": "web"},
            EventKind.CONTACT_ATTEMPTED: {"rep_id": "r", "channel": "call", "connected": False},
            EventKind.STAGE_CHANGED: {"rep_id": "r", "from_stage": None, "to_stage": "new"},
            EventKind.EMAIL_OPENED: {"message_id": "m"},
        }[kind]
    )


texts = st.text(min_size=1, max_size=128)
offsets = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(hours=8)),
        timezone(timedelta(hours=14)),
        timezone(-timedelta(hours=23, minutes=59)),
    ]
)
# st.datetimes takes naive bounds and attaches the offsets itself.
moments = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001
    max_value=datetime(2029, 12, 30),  # noqa: DTZ001
    timezones=offsets,
)
amounts = st.integers(min_value=0, max_value=10**12) | st.floats(
    min_value=0, max_value=1e12, allow_nan=False
)
probabilities = st.floats(min_value=0, max_value=1) | st.sampled_from([0, 1])


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


common_fields = st.fixed_dictionaries(
    {"event_id": texts, "occurred_at": moments, "lead_id": texts},
    optional={"team_id": texts},
)
kind_fields: dict[EventKind, st.SearchStrategy[dict[str, Any]]] = {
    EventKind.LEAD_CREATED: st.fixed_dictionaries(
        {"rep_id": texts, "source": texts},
        optional={"existing_customer": st.booleans(), "estimated_value": amounts},
    ),
    EventKind.CONTACT_ATTEMPTED: st.one_of(
        st.fixed_dictionaries(
            {
                "rep_id": texts,
                "channel": st.just("email"),
                "connected": st.booleans(),
                "message_id": texts,
            }
        ),
        st.fixed_dictionaries(
            {
                "rep_id": texts,
                "connected": st.booleans(),
                "channel": st.sampled_from(["call", "sms", "social", "meeting", "other"]),
            },
            optional={"message_id": texts},
        ),
    ),
    EventKind.STAGE_CHANGED: st.fixed_dictionaries(
        {
            "rep_id": texts,
            "from_stage": st.none() | texts,
            "lost_reason": texts,
            "to_stage": st.sampled_from(DEFAULT_STAGES),
        },
        optional={"deal_value": amounts, "win_probability": probabilities},
    ),
    EventKind.EMAIL_OPENED: st.fixed_dictionaries(
        {"message_id": texts}, optional={"rep_id": texts, "clicked": st.booleans()}
    ),
}


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[EventKind, dict[str, Any], datetime]:
    kind = draw(KINDS)
    fields = draw(common_fields) | draw(kind_fields[kind])
    moment = fields["occurred_at"]
    fields["occurred_at"] = moment.isoformat()
    # not a field, nor the reserved keys the CloudEvents unwrapping puts its type and source
    # under ("\x00ce_type", "\x00ce_source": no producer sends a NUL-prefixed name)
    names = st.text(max_size=8).filter(
        lambda name: name not in FIELDS and not name.startswith("\x00ce_")
    )
    extra = draw(st.dictionaries(names, json_trees, max_size=3))
    return kind, extra | fields, moment


@given(event=valid_events(), with_key=st.booleans())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_valid_events_always_parse(
    event: tuple[EventKind, dict[str, Any], datetime], with_key: bool
) -> None:
    kind, fields, moment = event
    key = fields["lead_id"].encode() if with_key else None
    parsed = parse_or_invalid(kind, key, orjson.dumps(fields))
    assert not isinstance(parsed, InvalidEvent), parsed
    assert parsed.ts == moment.timestamp()
    assert parsed.occurred_at == moment
    dumped = parsed.model_dump()
    for name, value in fields.items():
        if name in dumped and name != "occurred_at":
            assert dumped[name] == value
    assert parsed.team_id == fields.get("team_id", "default")
    if isinstance(parsed, LeadCreated):
        assert parsed.existing_customer == fields.get("existing_customer", False)
    if isinstance(parsed, EmailOpened):
        assert parsed.clicked == fields.get("clicked", False)
    if isinstance(parsed, ContactAttempted | StageChanged):
        assert parsed.rep_id == fields["rep_id"]


@given(event=valid_events(), fill_id=st.booleans(), fill_time=st.booleans())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_valid_events_in_envelopes_always_parse(
    event: tuple[EventKind, dict[str, Any], datetime], fill_id: bool, fill_time: bool
) -> None:
    kind, fields, moment = event
    data = dict(fields)
    envelope = {"specversion": "1.0", "id": data["event_id"], "source": "/s", "type": "t"}
    if fill_id:
        del data["event_id"]
    if fill_time:
        envelope["time"] = data.pop("occurred_at")
    parsed = parse_or_invalid(kind, None, orjson.dumps(envelope | {"data": data}))
    assert not isinstance(parsed, InvalidEvent), parsed
    assert (parsed.event_id, parsed.ts) == (fields["event_id"], moment.timestamp())
    assert (parsed.ce_type, parsed.ce_source) == ("t", "/s")
