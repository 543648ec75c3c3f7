"""Every rule of spec/events.md, through EventParser.parse: valid and invalid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from streamproc.config import Settings
from streamproc.contract.events import (
    EVENT_MODELS,
    ContactAttempted,
    EmailOpened,
    Event,
    EventKind,
    EventParser,
    LeadCreated,
    StageChanged,
)
from streamproc.exceptions import InvalidEvent

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC).timestamp()
WHEN = "2024-05-06T09:30:00Z"
WHEN_TS = datetime(2024, 5, 6, 9, 30, tzinfo=UTC).timestamp()

LEAD = EventKind.LEAD_CREATED
CONTACT = EventKind.CONTACT_ATTEMPTED
STAGE = EventKind.STAGE_CHANGED
OPENED = EventKind.EMAIL_OPENED

COMMON = {"event_id": "e-1", "occurred_at": WHEN, "lead_id": "L-1", "rep_id": "r-1"}
VALID: dict[EventKind, dict[str, Any]] = {
    LEAD: COMMON | {"source": "google_ads"},
    CONTACT: COMMON | {"channel": "call", "connected": True},
    STAGE: COMMON | {"from_stage": "new", "to_stage": "contacted"},
    OPENED: {k: v for k, v in COMMON.items() if k != "rep_id"} | {"message_id": "m-1"},
}


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def parser() -> EventParser:
    return EventParser(settings())


def parse(
    parser: EventParser,
    kind: EventKind,
    value: dict[str, Any] | bytes,
    key: bytes | None = None,
    now: float = NOW,
) -> Event:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return parser.parse(kind, key, raw, now)


def reason(parser: EventParser, kind: EventKind, value: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse(parser, kind, value, **kwargs)
    text = info.value.reason
    assert text and "\n" not in text and len(text) <= 300
    return text


def with_(kind: EventKind, **changes: Any) -> dict[str, Any]:
    return VALID[kind] | changes


def without(kind: EventKind, *names: str) -> dict[str, Any]:
    return {k: v for k, v in VALID[kind].items() if k not in names}


# --- kinds and topics --------------------------------------------------------------------------


def test_event_kinds_and_topics() -> None:
    assert [k.value for k in EventKind] == [
        "lead-created",
        "contact-attempted",
        "stage-changed",
        "email-opened",
    ]
    assert settings().topic(EventKind.STAGE_CHANGED.value) == "sales.stage-changed"
    assert {m.kind: m for m in EVENT_MODELS.values()} == EVENT_MODELS


@pytest.mark.parametrize("kind", list(EventKind))
def test_valid_minimal_event_parses_into_its_model(parser: EventParser, kind: EventKind) -> None:
    event = parse(parser, kind, VALID[kind], key=b"L-1")
    assert type(event) is EVENT_MODELS[kind]
    assert event.event_id == "e-1"
    assert event.lead_id == "L-1"
    assert event.team_id == "default"
    assert event.ts == WHEN_TS
    assert event.ce_type is None and event.ce_source is None


def test_plain_str_kind_works(parser: EventParser) -> None:
    assert isinstance(
        parser.parse("lead-created", None, orjson.dumps(VALID[LEAD]), NOW), LeadCreated
    )  # type: ignore[arg-type]


def test_unknown_kind_is_a_programming_error(parser: EventParser) -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        parser.parse("lead-deleted", None, b"{}", NOW)  # type: ignore[arg-type]


def test_optional_flags_null_are_false(parser: EventParser) -> None:
    """docs/events.md: optional fields may be absent or null (null was dead-lettered)."""
    lead = parse(parser, LEAD, with_(LEAD, existing_customer=None))
    assert isinstance(lead, LeadCreated) and lead.existing_customer is False
    opened = parse(parser, OPENED, with_(OPENED, clicked=None))
    assert isinstance(opened, EmailOpened) and opened.clicked is False


def test_defaults(parser: EventParser) -> None:
    lead = parse(parser, LEAD, VALID[LEAD])
    assert isinstance(lead, LeadCreated)
    assert lead.existing_customer is False and lead.estimated_value is None
    contact = parse(parser, CONTACT, VALID[CONTACT])
    assert isinstance(contact, ContactAttempted) and contact.message_id is None
    stage = parse(parser, STAGE, VALID[STAGE])
    assert isinstance(stage, StageChanged)
    assert (stage.deal_value, stage.win_probability, stage.lost_reason) == (None, None, None)
    opened = parse(parser, OPENED, VALID[OPENED])
    assert isinstance(opened, EmailOpened) and opened.clicked is False and opened.rep_id is None


def test_all_fields_given(parser: EventParser) -> None:
    lead = parse(
        parser,
        LEAD,
        with_(LEAD, team_id="t-9", existing_customer=True, estimated_value=27600),
    )
    assert isinstance(lead, LeadCreated)
    assert (lead.team_id, lead.existing_customer, lead.estimated_value) == ("t-9", True, 27600.0)
    stage = parse(
        parser,
        STAGE,
        with_(
            STAGE, to_stage="lost", deal_value=34500.5, win_probability=0.83, lost_reason="price"
        ),
    )
    assert isinstance(stage, StageChanged)
    assert (stage.deal_value, stage.win_probability, stage.lost_reason) == (34500.5, 0.83, "price")
    opened = parse(parser, OPENED, with_(OPENED, rep_id="r-2", clicked=True))
    assert isinstance(opened, EmailOpened) and opened.clicked is True and opened.rep_id == "r-2"


def test_unknown_fields_are_ignored(parser: EventParser) -> None:
    extra = {"crm_field": {"x": [1, 2]}, "kind": "whatever", "ts": "no", "model_config": 1}
    event = parse(parser, LEAD, VALID[LEAD] | extra)
    assert event.ts == WHEN_TS
    assert not hasattr(event, "crm_field")


def test_events_are_frozen(parser: EventParser) -> None:
    event = parse(parser, LEAD, VALID[LEAD])
    with pytest.raises(ValueError, match="frozen"):
        event.lead_id = "other"  # type: ignore[misc]


def test_ts_is_cached_and_models_still_compare(parser: EventParser) -> None:
    first = parse(parser, LEAD, VALID[LEAD])
    second = parse(parser, LEAD, VALID[LEAD])
    assert first.ts == first.ts == WHEN_TS
    assert first == second


# --- common fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [LEAD, CONTACT, STAGE])
def test_rep_id_required_except_on_email_opened(parser: EventParser, kind: EventKind) -> None:
    assert reason(parser, kind, without(kind, "rep_id")) == "missing field rep_id"


@pytest.mark.parametrize("name", ["event_id", "occurred_at", "lead_id"])
@pytest.mark.parametrize("kind", list(EventKind))
def test_common_fields_required(parser: EventParser, kind: EventKind, name: str) -> None:
    assert reason(parser, kind, without(kind, name)) == f"missing field {name}"


TEXT_FIELDS = [
    (LEAD, "event_id"),
    (LEAD, "lead_id"),
    (LEAD, "rep_id"),
    (LEAD, "team_id"),
    (LEAD, "source"),
    (OPENED, "rep_id"),
    (OPENED, "message_id"),
    (CONTACT, "message_id"),
    (STAGE, "from_stage"),
]


# optional text fields: "" is no value, as absent (docs/events.md); an id (an open's
# rep_id) is 1-128 chars even where it may be left out
BLANK_IS_ABSENT = {
    (LEAD, "team_id"): "default",
    (CONTACT, "message_id"): None,
    (STAGE, "from_stage"): None,
}


@pytest.mark.parametrize(("kind", "name"), TEXT_FIELDS)
def test_text_fields_are_at_most_128_chars(parser: EventParser, kind: EventKind, name: str) -> None:
    assert getattr(parse(parser, kind, with_(kind, **{name: "x"})), name) == "x"
    longest = "é" * 128  # chars, not bytes
    assert getattr(parse(parser, kind, with_(kind, **{name: longest})), name) == longest
    too_long = reason(parser, kind, with_(kind, **{name: "x" * 129}))
    assert too_long == f"{name} is longer than 128 chars"


@pytest.mark.parametrize(("kind", "name"), TEXT_FIELDS)
def test_an_empty_text_is_bad_input_where_required_and_no_value_where_optional(
    parser: EventParser, kind: EventKind, name: str
) -> None:
    blank = with_(kind, **{name: ""})
    if (kind, name) in BLANK_IS_ABSENT:
        assert getattr(parse(parser, kind, blank), name) == BLANK_IS_ABSENT[kind, name]
    else:
        assert reason(parser, kind, blank) == f"{name} must not be empty"


def test_an_empty_text_required_in_some_case_is_missing_there(parser: EventParser) -> None:
    lost = with_(STAGE, to_stage="lost")
    assert "lost_reason" in reason(parser, STAGE, lost | {"lost_reason": ""})
    assert reason(parser, STAGE, lost | {"lost_reason": ""}) == reason(parser, STAGE, lost)
    email = with_(CONTACT, channel="email", message_id="")
    assert reason(parser, CONTACT, email) == reason(
        parser, CONTACT, without(CONTACT) | {"channel": "email"}
    )
    assert "longer than 128" in reason(parser, STAGE, lost | {"lost_reason": "x" * 129})


@pytest.mark.parametrize(("kind", "name"), [*TEXT_FIELDS, (STAGE, "to_stage")])
@pytest.mark.parametrize("bad", [5, 1.5, True, ["x"], {"x": 1}])
def test_text_fields_must_be_strings(
    parser: EventParser, kind: EventKind, name: str, bad: Any
) -> None:
    assert reason(parser, kind, with_(kind, **{name: bad})) == f"{name} must be a string"


@pytest.mark.parametrize(
    ("kind", "name"),
    [(LEAD, "estimated_value"), (CONTACT, "message_id"), (OPENED, "rep_id")],
)
def test_optional_fields_null_counts_as_absent(
    parser: EventParser, kind: EventKind, name: str
) -> None:
    assert getattr(parse(parser, kind, with_(kind, **{name: None})), name) is None


def test_team_id_null_is_the_default_team(parser: EventParser) -> None:
    assert parse(parser, LEAD, with_(LEAD, team_id=None)).team_id == "default"


@pytest.mark.parametrize("name", ["event_id", "lead_id", "rep_id"])
def test_string_fields_not_null(parser: EventParser, name: str) -> None:
    assert reason(parser, LEAD, with_(LEAD, **{name: None})) == f"{name} must be a string"


# --- occurred_at -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-06T09:30:00Z", datetime(2024, 5, 6, 9, 30, tzinfo=UTC)),
        ("2024-05-06t09:30:00z", datetime(2024, 5, 6, 9, 30, tzinfo=UTC)),
        ("2024-05-06T11:30:00+02:00", datetime(2024, 5, 6, 9, 30, tzinfo=UTC)),
        ("2024-05-06T04:00:00-05:30", datetime(2024, 5, 6, 9, 30, tzinfo=UTC)),
        ("2024-05-06T09:30:00.5Z", datetime(2024, 5, 6, 9, 30, 0, 500000, tzinfo=UTC)),
        ("2024-05-06T09:30:00.123456789Z", datetime(2024, 5, 6, 9, 30, 0, 123456, tzinfo=UTC)),
        ("2024-05-06T09:30:00-00:00", datetime(2024, 5, 6, 9, 30, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),  # leap second
    ],
)
def test_occurred_at_rfc3339_with_offset(
    parser: EventParser, text: str, expected: datetime
) -> None:
    event = parse(parser, LEAD, with_(LEAD, occurred_at=text))
    assert event.occurred_at == expected
    assert event.ts == expected.timestamp()
    assert event.occurred_at.utcoffset() is not None


@pytest.mark.parametrize(
    "text", ["2024-05-06T09:30:00", "2024-05-06T09:30:00.250", "2024-05-06 09:30:00"]
)
def test_naive_occurred_at_is_invalid(parser: EventParser, text: str) -> None:
    assert reason(parser, LEAD, with_(LEAD, occurred_at=text)) == "occurred_at has no UTC offset"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-05-06",
        "2024-05-06T09:30Z",  # seconds are required
        "2024-05-06 09:30:00Z",  # RFC 3339's grammar wants T
        "2024-05-06T09:30:00+0200",
        "2024-05-06T09:30:00+02",
        "2024-05-06T09:30:00+24:00",
        "2024-05-06T09:30:00+01:60",
        "2024-05-06T24:00:00Z",
        "2024-05-06T09:30:00.Z",
        "2024-05-06T09:30:00Z\n",
        " 2024-05-06T09:30:00Z",
        "1714987800",
        "2024-W19-1T09:30:00Z",
        "20240506T093000Z",
        "\uff12\uff10\uff12\uff14-05-06T09:30:00Z",  # non-ASCII digits
    ],
)
def test_malformed_occurred_at_is_invalid(parser: EventParser, text: str) -> None:
    assert reason(parser, LEAD, with_(LEAD, occurred_at=text)) == (
        "occurred_at must be an RFC 3339 date-time with an offset"
    )


@pytest.mark.parametrize(
    "text", ["2024-02-30T09:30:00Z", "2023-13-01T09:30:00Z", "0000-01-01T00:00:00Z"]
)
def test_impossible_dates_are_invalid(parser: EventParser, text: str) -> None:
    assert reason(parser, LEAD, with_(LEAD, occurred_at=text)).startswith(
        "occurred_at is not a valid date-time: "
    )


@pytest.mark.parametrize("bad", [1714987800, 1714987800.5, True, None, ["2024-05-06T09:30:00Z"]])
def test_occurred_at_must_be_a_string(parser: EventParser, bad: Any) -> None:
    assert reason(parser, LEAD, with_(LEAD, occurred_at=bad)) == (
        "occurred_at must be an RFC 3339 date-time with an offset"
    )


def test_future_occurred_at(parser: EventParser) -> None:
    at = datetime.fromtimestamp(NOW, UTC)
    for ahead in (0, 299, 300):
        stamp = (at + timedelta(seconds=ahead)).isoformat()
        assert parse(parser, LEAD, with_(LEAD, occurred_at=stamp)).ts == NOW + ahead
    late = (at + timedelta(seconds=3600)).isoformat()
    assert reason(parser, LEAD, with_(LEAD, occurred_at=late)) == (
        "occurred_at is 3600 s in the future"
    )
    assert "in the future" in reason(
        parser, LEAD, with_(LEAD, occurred_at=(at + timedelta(seconds=300.5)).isoformat())
    )


def test_max_future_is_configurable() -> None:
    strict = EventParser(settings(max_future_seconds=0))
    at = datetime.fromtimestamp(NOW, UTC)
    assert parse(strict, LEAD, with_(LEAD, occurred_at=at.isoformat())).ts == NOW
    ahead = (at + timedelta(seconds=1)).isoformat()
    assert reason(strict, LEAD, with_(LEAD, occurred_at=ahead)) == (
        "occurred_at is 1 s in the future"
    )


def test_old_events_are_valid(parser: EventParser) -> None:
    assert parse(parser, LEAD, with_(LEAD, occurred_at="1999-01-01T00:00:00+14:00")).ts < NOW


# --- lead-created ------------------------------------------------------------------------------


def test_lead_created_needs_source(parser: EventParser) -> None:
    assert reason(parser, LEAD, without(LEAD, "source")) == "missing field source"


@pytest.mark.parametrize("value", [0, 0.0, 1, 27600.75, 1e15])
def test_estimated_value_non_negative(parser: EventParser, value: float) -> None:
    event = parse(parser, LEAD, with_(LEAD, estimated_value=value))
    assert isinstance(event, LeadCreated) and event.estimated_value == value


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (-1, "estimated_value must be >= 0"),
        (-0.01, "estimated_value must be >= 0"),
        ("100", "estimated_value must be a number"),
        (True, "estimated_value must be a number"),
        ([1], "estimated_value must be a number"),
    ],
)
def test_estimated_value_invalid(parser: EventParser, bad: Any, text: str) -> None:
    assert reason(parser, LEAD, with_(LEAD, estimated_value=bad)) == text


@pytest.mark.parametrize("bad", [1, 0, "true", "false", [True]])
def test_existing_customer_must_be_a_json_bool(parser: EventParser, bad: Any) -> None:
    assert reason(parser, LEAD, with_(LEAD, existing_customer=bad)) == (
        "existing_customer must be true or false"
    )


# --- contact-attempted -------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["call", "sms", "social", "meeting", "other"])
def test_channels(parser: EventParser, channel: str) -> None:
    event = parse(parser, CONTACT, with_(CONTACT, channel=channel))
    assert isinstance(event, ContactAttempted) and event.channel == channel


@pytest.mark.parametrize("bad", ["fax", "CALL", "Email", "", 1, None])
def test_unknown_channel_is_invalid(parser: EventParser, bad: Any) -> None:
    assert reason(parser, CONTACT, with_(CONTACT, channel=bad)).startswith("channel must be 'call'")


def test_channel_and_connected_required(parser: EventParser) -> None:
    assert reason(parser, CONTACT, without(CONTACT, "channel")) == "missing field channel"
    assert reason(parser, CONTACT, without(CONTACT, "connected")) == "missing field connected"


@pytest.mark.parametrize("bad", [1, 0, "true", "yes", None])
def test_connected_must_be_a_json_bool(parser: EventParser, bad: Any) -> None:
    assert reason(parser, CONTACT, with_(CONTACT, connected=bad)) == (
        "connected must be true or false"
    )


def test_email_needs_message_id(parser: EventParser) -> None:
    assert reason(parser, CONTACT, with_(CONTACT, channel="email")) == (
        "message_id is required when channel is email"
    )
    event = parse(parser, CONTACT, with_(CONTACT, channel="email", message_id="m-1"))
    assert isinstance(event, ContactAttempted) and event.message_id == "m-1"
    other = parse(parser, CONTACT, with_(CONTACT, channel="sms", message_id="m-2"))
    assert isinstance(other, ContactAttempted) and other.message_id == "m-2"


# --- stage-changed -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage", ["new", "contacted", "qualified", "proposal", "negotiation", "won"]
)
def test_default_stages(parser: EventParser, stage: str) -> None:
    event = parse(parser, STAGE, with_(STAGE, to_stage=stage))
    assert isinstance(event, StageChanged) and event.to_stage == stage


@pytest.mark.parametrize("bad", ["closed", "Won", "", "lost "])
def test_unknown_stage_is_invalid(parser: EventParser, bad: str) -> None:
    text = reason(parser, STAGE, with_(STAGE, to_stage=bad))
    assert text in (f"to_stage {bad!r} is not a configured stage", "to_stage must not be empty")


def test_from_stage_null_for_the_first_stage(parser: EventParser) -> None:
    event = parse(parser, STAGE, with_(STAGE, from_stage=None, to_stage="new"))
    assert isinstance(event, StageChanged) and event.from_stage is None


def test_from_stage_absent_is_null(parser: EventParser) -> None:
    # Informational only (transitions come from the lead's ordered history): absent = null.
    assert parse(parser, STAGE, without(STAGE, "from_stage")).from_stage is None


def test_to_stage_required(parser: EventParser) -> None:
    assert reason(parser, STAGE, without(STAGE, "to_stage")) == "missing field to_stage"


def test_lost_needs_a_reason(parser: EventParser) -> None:
    assert reason(parser, STAGE, with_(STAGE, to_stage="lost")) == (
        "lost_reason is required when to_stage is lost"
    )
    event = parse(parser, STAGE, with_(STAGE, to_stage="lost", lost_reason="competitor"))
    assert isinstance(event, StageChanged) and event.lost_reason == "competitor"
    won = parse(parser, STAGE, with_(STAGE, to_stage="won", lost_reason="ignored"))
    assert isinstance(won, StageChanged)


def test_configured_stages() -> None:
    custom = EventParser(
        settings(
            stages="lead,demo,trial,closed_won,closed_lost",
            won_stage="closed_won",
            lost_stage="closed_lost",
        )
    )
    assert isinstance(parse(custom, STAGE, with_(STAGE, to_stage="demo")), StageChanged)
    assert reason(custom, STAGE, with_(STAGE, to_stage="proposal")) == (
        "to_stage 'proposal' is not a configured stage"
    )
    assert reason(custom, STAGE, with_(STAGE, to_stage="closed_lost")) == (
        "lost_reason is required when to_stage is closed_lost"
    )
    # "lost" is an ordinary unknown stage here, not the lost stage.
    assert "not a configured stage" in reason(custom, STAGE, with_(STAGE, to_stage="lost"))


def test_models_without_context_use_the_default_pipeline() -> None:
    event = StageChanged.model_validate(with_(STAGE, to_stage="proposal"))
    assert event.to_stage == "proposal"
    with pytest.raises(ValueError, match="not a configured stage"):
        StageChanged.model_validate(with_(STAGE, to_stage="demo"))
    with pytest.raises(ValueError, match="lost_reason is required"):
        StageChanged.model_validate(with_(STAGE, to_stage="lost"))


@pytest.mark.parametrize("value", [0, 0.0, 27600, 34500.5])
def test_deal_value_non_negative(parser: EventParser, value: float) -> None:
    event = parse(parser, STAGE, with_(STAGE, deal_value=value))
    assert isinstance(event, StageChanged) and event.deal_value == value


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (-5, "deal_value must be >= 0"),
        ("27600", "deal_value must be a number"),
        (True, "deal_value must be a number"),
    ],
)
def test_deal_value_invalid(parser: EventParser, bad: Any, text: str) -> None:
    assert reason(parser, STAGE, with_(STAGE, deal_value=bad)) == text


@pytest.mark.parametrize("value", [0, 0.12, 0.83, 1, 1.0])
def test_win_probability_in_0_1(parser: EventParser, value: float) -> None:
    event = parse(parser, STAGE, with_(STAGE, win_probability=value))
    assert isinstance(event, StageChanged) and event.win_probability == value


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (1.01, "win_probability must be <= 1"),
        (83, "win_probability must be <= 1"),
        (-0.1, "win_probability must be >= 0"),
        ("0.5", "win_probability must be a number"),
        (False, "win_probability must be a number"),
    ],
)
def test_win_probability_invalid(parser: EventParser, bad: Any, text: str) -> None:
    assert reason(parser, STAGE, with_(STAGE, win_probability=bad)) == text


# --- email-opened ------------------------------------------------------------------------------


def test_email_opened_needs_message_id(parser: EventParser) -> None:
    assert reason(parser, OPENED, without(OPENED, "message_id")) == "missing field message_id"


@pytest.mark.parametrize("bad", [1, "true", [False]])
def test_clicked_must_be_a_json_bool(parser: EventParser, bad: Any) -> None:
    assert reason(parser, OPENED, with_(OPENED, clicked=bad)) == "clicked must be true or false"


# --- bytes that are not an event ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        (b"", "empty message"),
        (b"{", "not JSON"),
        (b"lead", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b'{"lead_id": "\xc3\x28"}', "not JSON"),
        (b'{"lead_id": "\\ud800"}', "not JSON"),
        (b'{"x": 1e400}', "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),
        (b"[]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"true", "not a JSON object"),
    ],
)
def test_not_a_json_object(parser: EventParser, raw: bytes, start: str) -> None:
    assert reason(parser, LEAD, raw).startswith(start)


def test_several_errors_are_counted_in_one_line(parser: EventParser) -> None:
    assert reason(parser, LEAD, {}) == "missing field event_id (and 4 more)"


def test_huge_numbers(parser: EventParser) -> None:
    def lead(number: bytes) -> bytes:
        return orjson.dumps(VALID[LEAD])[:-1] + b', "estimated_value": ' + number + b"}"

    event = parse(parser, LEAD, lead(b"9" * 15))
    assert isinstance(event, LeadCreated) and event.estimated_value == float("9" * 15)
    # a double, but above the bound that keeps every sum finite (MAX_AMOUNT)
    assert reason(parser, LEAD, lead(b"9" * 300)).startswith("estimated_value is above 1e15")
    assert reason(parser, LEAD, lead(b"9" * 400)).startswith("not JSON")  # beyond a double
    assert reason(parser, LEAD, lead(b"-" + b"9" * 30)) == "estimated_value must be >= 0"
    big = orjson.dumps(with_(STAGE, win_probability=2**63 - 1))
    assert reason(parser, STAGE, big) == "win_probability must be <= 1"


# --- Kafka key ---------------------------------------------------------------------------------


def test_key_matching_lead_id(parser: EventParser) -> None:
    assert parse(parser, LEAD, VALID[LEAD], key=b"L-1").lead_id == "L-1"
    assert parse(parser, LEAD, VALID[LEAD], key=None).lead_id == "L-1"
    unicode = with_(LEAD, lead_id="léad-✓")
    assert parse(parser, LEAD, unicode, key="léad-✓".encode()).lead_id == "léad-✓"


def test_key_differing_from_lead_id(parser: EventParser) -> None:
    assert reason(parser, LEAD, VALID[LEAD], key=b"L-2") == "key 'L-2' differs from lead_id 'L-1'"
    assert reason(parser, LEAD, VALID[LEAD], key=b"") == "key '' differs from lead_id 'L-1'"
    long = reason(parser, LEAD, VALID[LEAD], key=b"k\n" * 1000)
    assert long.startswith("key 'k\\nk\\n") and len(long) < 200


def test_key_not_utf8(parser: EventParser) -> None:
    assert reason(parser, LEAD, VALID[LEAD], key=b"\xff") == "key is not UTF-8"


# --- CloudEvents envelope ----------------------------------------------------------------------


def envelope(data: Any, **attributes: Any) -> dict[str, Any]:
    base = {"specversion": "1.0", "id": "ce-1", "source": "/crm", "type": "com.crm.lead"}
    return base | attributes | {"data": data}


def test_envelope_fills_event_id_and_occurred_at(parser: EventParser) -> None:
    data = without(LEAD, "event_id", "occurred_at")
    event = parse(parser, LEAD, envelope(data, time="2024-05-06T11:30:00+02:00"), key=b"L-1")
    assert isinstance(event, LeadCreated)
    assert event.event_id == "ce-1"
    assert event.ts == WHEN_TS
    assert (event.ce_type, event.ce_source) == ("com.crm.lead", "/crm")
    assert event.source == "google_ads"


def test_plain_event_cannot_set_tracing_fields(parser: EventParser) -> None:
    event = parse(parser, LEAD, with_(LEAD, ce_type=5, ce_source={"x": 1}))
    assert (event.ce_type, event.ce_source) == (None, None)
    wrapped = envelope(with_(LEAD, ce_type="inner", ce_source="inner"))
    event = parse(parser, LEAD, wrapped)
    assert (event.ce_type, event.ce_source) == ("com.crm.lead", "/crm")


def test_envelope_data_wins_over_attributes(parser: EventParser) -> None:
    event = parse(parser, LEAD, envelope(VALID[LEAD], time="2020-01-01T00:00:00Z"))
    assert event.event_id == "e-1"
    assert event.ts == WHEN_TS


def test_envelope_extensions_and_null_attributes(parser: EventParser) -> None:
    wrapped = envelope(VALID[OPENED], time=None, subject=None, datacontenttype="application/json")
    event = parse(parser, OPENED, wrapped | {"comexampleext": 5})
    assert isinstance(event, EmailOpened) and event.ts == WHEN_TS


def test_envelope_without_any_time(parser: EventParser) -> None:
    data = without(LEAD, "occurred_at")
    assert reason(parser, LEAD, envelope(data)) == "missing field occurred_at"
    assert reason(parser, LEAD, envelope(data, time=None)) == "missing field occurred_at"


def test_envelope_time_is_checked(parser: EventParser) -> None:
    naive = envelope(VALID[LEAD], time="2024-05-06T09:30:00")
    assert reason(parser, LEAD, naive) == "envelope: time has no UTC offset"
    future = envelope(without(LEAD, "occurred_at"), time="2099-01-01T00:00:00Z")
    assert "in the future" in reason(parser, LEAD, future)


def test_envelope_id_must_fit_event_id(parser: EventParser) -> None:
    data = without(LEAD, "event_id")
    assert reason(parser, LEAD, envelope(data, id="x" * 129)) == (
        "event_id is longer than 128 chars"
    )


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"specversion": "0.3"}, "envelope: specversion must be '1.0'"),
        ({"specversion": 1.0}, "envelope: specversion must be '1.0'"),
        ({"id": ""}, "envelope: id must not be empty"),
        ({"id": 7}, "envelope: id must be a string"),
        ({"source": None}, "envelope: source must be a string"),
        ({"type": ""}, "envelope: type must not be empty"),
        ({"data": [1]}, "envelope: data must be an object"),
        ({"data": "{}"}, "envelope: data must be an object"),
        ({"data": None}, "envelope: data must be an object"),
    ],
)
def test_invalid_envelopes(parser: EventParser, change: dict[str, Any], text: str) -> None:
    assert reason(parser, LEAD, envelope(VALID[LEAD]) | change) == text


@pytest.mark.parametrize("name", ["id", "source", "type", "data"])
def test_envelope_required_attributes(parser: EventParser, name: str) -> None:
    wrapped = envelope(VALID[LEAD])
    del wrapped[name]
    assert reason(parser, LEAD, wrapped) == f"envelope: missing field {name}"


def test_envelope_data_is_validated_like_a_plain_event(parser: EventParser) -> None:
    data = with_(CONTACT, channel="email")
    assert reason(parser, CONTACT, envelope(data)) == "message_id is required when channel is email"
    assert reason(parser, LEAD, envelope(VALID[LEAD]), key=b"x") == (
        "key 'x' differs from lead_id 'L-1'"
    )


# --- models built in Python --------------------------------------------------------------------


def test_models_accept_aware_datetimes_in_python() -> None:
    at = datetime(2024, 5, 6, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    event = LeadCreated(event_id="e", occurred_at=at, lead_id="L", rep_id="r", source="s")
    assert event.ts == at.timestamp()
    with pytest.raises(ValueError, match="timezone"):
        LeadCreated(
            event_id="e",
            occurred_at=datetime(2024, 5, 6),  # noqa: DTZ001 (naive on purpose)
            lead_id="L",
            rep_id="r",
            source="s",
        )


def test_model_dump_round_trips(parser: EventParser) -> None:
    event = parse(parser, STAGE, with_(STAGE, deal_value=10, lost_reason="x", to_stage="lost"))
    dumped = event.model_dump(mode="json", exclude_none=True)
    assert parse(parser, STAGE, dumped) == event
