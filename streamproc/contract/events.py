"""The input events (spec/events.md) as strict pydantic models; every free string is 1-128 chars."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from streamproc.config import DEFAULT_STAGES, Settings
from streamproc.exceptions import InvalidEvent

__all__ = [
    "EVENT_MODELS",
    "RFC3339_PATTERN",
    "CloudEventEnvelope",
    "ContactAttempted",
    "EmailOpened",
    "Event",
    "EventKind",
    "EventParser",
    "LeadCreated",
    "StageChanged",
]

# The contract bounds ids at 1-128 chars and leaves source, team_id, lost_reason, message_id and
# from_stage unbounded; we bound them the same way so that no field can bloat state or labels.
MAX_TEXT = 128

# RFC 3339 section 5.6 `date-time`: "T" and "Z" in either case, seconds required (60 is a leap
# second), and an offset required: a naive time has no instant. [0-9] rather than \d, so that
# Python and the ECMA regex of the JSON Schema agree (Python's \d takes any Unicode digit).
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
RFC3339_PATTERN = f"^{_DATE}[Tt]{_TIME}{_OFFSET}$"
_RFC3339 = re.compile(f"{_DATE}[Tt]{_TIME}{_OFFSET}")
_NAIVE = re.compile(f"{_DATE}[Tt ]{_TIME}")
_CE_TYPE_KEY = "\x00ce_type"
_CE_SOURCE_KEY = "\x00ce_source"
_TIMESTAMP_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": RFC3339_PATTERN,
    "description": "RFC 3339 date-time with an offset, e.g. 2024-05-06T09:30:00Z",
}


class EventKind(StrEnum):
    """The four kinds of event; the value is the topic name without the prefix."""

    LEAD_CREATED = "lead-created"
    CONTACT_ATTEMPTED = "contact-attempted"
    STAGE_CHANGED = "stage-changed"
    EMAIL_OPENED = "email-opened"


def _to_datetime(value: object) -> object:
    """Parse an RFC 3339 string; a datetime (event built in Python) goes on to the aware check."""
    if isinstance(value, datetime):
        return value
    if type(value) is not str or _RFC3339.fullmatch(value) is None:
        if type(value) is str and _NAIVE.fullmatch(value):
            raise PydanticCustomError("naive_datetime", "has no UTC offset")
        raise PydanticCustomError("rfc3339", "must be an RFC 3339 date-time with an offset")
    text = value[:-1] + "Z" if value[-1] == "z" else value  # fromisoformat wants "Z"
    leap = text[17:19] == "60"  # datetime has no second 60: take the next second, as POSIX does
    if leap:
        text = f"{text[:17]}59{text[19:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PydanticCustomError(
            "rfc3339", "is not a valid date-time: {detail}", {"detail": str(exc)}
        ) from None
    return parsed + timedelta(seconds=1) if leap else parsed


def _null_is_absent(value: object) -> object:
    """An optional field may be left out or null: producers write both for "no value"."""
    return value


def _default_team(value: object) -> object:
    return "default" if value is None else value


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_to_datetime), WithJsonSchema(_TIMESTAMP_SCHEMA)
]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_TEXT_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
OptionalText = Annotated[
    Text | None, BeforeValidator(_null_is_absent), WithJsonSchema(_TEXT_SCHEMA)
]
OptionalNonNegative = Annotated[
    NonNegative | None,
    BeforeValidator(_null_is_absent),
    WithJsonSchema({"type": "number", "minimum": 0}),
]
OptionalProbability = Annotated[
    Probability | None,
    BeforeValidator(_null_is_absent),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1}),
]
Channel = Literal["call", "email", "sms", "social", "meeting", "other"]


class _EventBase(BaseModel):
    """Fields common to every event."""

    # strict: a JSON bool is no number, a string no number and a number no string.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    kind: ClassVar[EventKind]

    event_id: Text = Field(description="Unique per event; a repeat is a duplicate.")
    occurred_at: Timestamp = Field(description="Event time, with an offset.")
    lead_id: Text = Field(description="The lead (prospect) the event is about.")
    rep_id: Text = Field(description="The sales rep who owns the lead or acted.")
    team_id: Annotated[Text, BeforeValidator(_default_team)] = Field(
        default="default", description="The rep's team (null or absent: default)."
    )
    # The envelope's type and source, kept for tracing; not part of the contract. Read from keys
    # no producer sends, so that a plain event's own "ce_type" stays an ignored unknown field;
    # in Python, set them with model_copy(update=...).
    ce_type: SkipJsonSchema[str | None] = Field(default=None, validation_alias=_CE_TYPE_KEY)
    ce_source: SkipJsonSchema[str | None] = Field(default=None, validation_alias=_CE_SOURCE_KEY)

    @cached_property
    def ts(self) -> float:
        """``occurred_at`` as epoch seconds."""
        return self.occurred_at.timestamp()


class LeadCreated(_EventBase):
    """A new lead entered the pipeline."""

    kind: ClassVar[EventKind] = EventKind.LEAD_CREATED

    source: Text = Field(description="Where the lead came from: google_ads, referral, ...")
    existing_customer: bool = Field(default=False, description="Upsell / cross-sell lead.")
    estimated_value: OptionalNonNegative = Field(default=None, description="First value guess.")


class ContactAttempted(_EventBase):
    """A rep tried to reach the lead."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"channel": {"const": "email"}}, "required": ["channel"]},
            "then": {"required": ["message_id"]},
        }
    )
    kind: ClassVar[EventKind] = EventKind.CONTACT_ATTEMPTED

    channel: Channel = Field(description="Outreach method.")
    connected: bool = Field(description="A two-way conversation happened.")
    message_id: OptionalText = Field(
        default=None, description="Required when channel is email: joins the opens of that email."
    )

    @model_validator(mode="after")
    def _email_has_message_id(self) -> ContactAttempted:
        if self.channel == "email" and self.message_id is None:
            raise PydanticCustomError("rule", "message_id is required when channel is email")
        return self


class StageChanged(_EventBase):
    """The lead's deal moved in the pipeline.

    to_stage must be one of the configured stages (default: new, contacted, qualified, proposal,
    negotiation, won, lost) and lost_reason is required when to_stage is the lost stage (default:
    lost). Both depend on the settings, so the JSON Schema cannot check them.
    """

    # Validate with context={"settings": settings} to check against the configured pipeline;
    # without a context the default pipeline applies.
    kind: ClassVar[EventKind] = EventKind.STAGE_CHANGED

    from_stage: Text | None = Field(
        default=None, description="The previous stage; null (or absent) for the first stage."
    )
    to_stage: Text = Field(
        description="One of the configured stages (default: " + ", ".join(DEFAULT_STAGES) + ")."
    )
    deal_value: OptionalNonNegative = Field(
        default=None, description="The deal's current value; the last one given stands."
    )
    win_probability: OptionalProbability = Field(
        default=None, description="The rep's confidence; without it the stage's default applies."
    )
    lost_reason: OptionalText = Field(
        default=None,
        description="Required when to_stage is the lost stage (default: lost): competitor, "
        "price, no_budget, timing, no_response, ...",
    )

    @model_validator(mode="after")
    def _pipeline_rules(self, info: ValidationInfo) -> StageChanged:
        settings = info.context.get("settings") if isinstance(info.context, dict) else None
        stages = settings.stages if settings is not None else DEFAULT_STAGES
        lost = settings.lost_stage if settings is not None else "lost"
        if self.to_stage not in stages:
            raise PydanticCustomError(
                "stage",
                "to_stage {stage} is not a configured stage",
                {"stage": repr(self.to_stage)},
            )
        if self.to_stage == lost and self.lost_reason is None:
            raise PydanticCustomError(
                "rule", "lost_reason is required when to_stage is {lost}", {"lost": lost}
            )
        return self


class EmailOpened(_EventBase):
    """The lead opened a sales email."""

    kind: ClassVar[EventKind] = EventKind.EMAIL_OPENED

    # Optional here alone: an open is the lead's act, not a rep's.
    rep_id: OptionalText = Field(default=None, description="The rep, when known.")  # type: ignore[assignment]
    message_id: Text = Field(description="The message_id of the contact-attempted that sent it.")
    clicked: bool = Field(default=False, description="A link was clicked (a click is an open).")


Event: TypeAlias = LeadCreated | ContactAttempted | StageChanged | EmailOpened

EVENT_MODELS: Mapping[EventKind, type[Event]] = {
    model.kind: model for model in (LeadCreated, ContactAttempted, StageChanged, EmailOpened)
}


class CloudEventEnvelope(BaseModel):
    """A CloudEvents 1.0 structured-mode envelope whose ``data`` is one of the events."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    specversion: Literal["1.0"]
    id: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Fills event_id when data has none."
    )
    source: Annotated[str, StringConstraints(min_length=1)] = Field(description="Kept for tracing.")
    type: Annotated[str, StringConstraints(min_length=1)] = Field(description="Kept for tracing.")
    # CloudEvents JSON format: an attribute set to null is the same as an absent one.
    time: Timestamp | None = Field(
        default=None, description="Fills occurred_at when data has none."
    )
    subject: str | None = None
    datacontenttype: str | None = None
    data: dict[str, Any] = Field(description="The event, of the kind the topic names.")


# ---------------------------------------------------------------------------------------------
# Parsing: bytes in, a model or InvalidEvent out.

_ERROR_TEMPLATES = {
    "missing": "missing field {loc}",
    "string_type": "{loc} must be a string",
    "string_too_short": "{loc} must not be empty",
    "string_too_long": "{loc} is longer than {max_length} chars",
    "bool_type": "{loc} must be true or false",
    "float_type": "{loc} must be a number",
    "finite_number": "{loc} must be a finite number",
    "greater_than_equal": "{loc} must be >= {ge}",
    "less_than_equal": "{loc} must be <= {le}",
    "literal_error": "{loc} must be {expected}",
    "dict_type": "{loc} must be an object",
    "timezone_aware": "{loc} has no UTC offset",
}
_MAX_REASON = 300


def _reason(exc: ValidationError) -> str:
    """The first error of a validation as one short line."""
    errors = exc.errors(include_url=False, include_context=True, include_input=False)
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    template = _ERROR_TEMPLATES.get(first["type"])
    if template is not None:
        ctx = {name: _number(value) for name, value in first.get("ctx", {}).items()}
        text = template.format(loc=loc, **ctx)
    else:
        text = f"{loc} {first['msg']}" if loc else first["msg"]
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return _one_line(text)


def _number(value: object) -> object:
    """0.0 reads better as 0 in a reason."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _one_line(text: str) -> str:
    """Reasons go to logs and dead letters: one line, bounded."""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _short(text: str) -> str:
    """repr of a user string, bounded (repr keeps it on one line)."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


class EventParser:
    """Turns a Kafka message of a known kind into an event model, or raises InvalidEvent."""

    __slots__ = ("_context", "_envelope", "_max_future", "_validators")

    def __init__(self, settings: Settings) -> None:
        self._context = {"settings": settings}
        self._max_future = settings.max_future_seconds
        # The validators themselves: model_validate adds a Python call per event.
        self._validators = {kind: m.__pydantic_validator__ for kind, m in EVENT_MODELS.items()}
        self._envelope = CloudEventEnvelope.__pydantic_validator__

    def parse(self, kind: EventKind, key: bytes | None, value: bytes, now: float) -> Event:
        """Decode, unwrap, validate and check one message; ``now`` is the worker's epoch clock."""
        validator = self._validators.get(kind)
        if validator is None:  # a programming error, not a bad message
            raise ValueError(f"unknown event kind {kind!r}")
        try:
            return self._parse(validator, key, value, now)
        except InvalidEvent:
            raise
        except Exception as exc:  # last resort: no message may ever stop the worker
            raise InvalidEvent(f"unreadable message ({type(exc).__name__})") from exc

    def _parse(self, validator: Any, key: bytes | None, value: bytes, now: float) -> Event:
        if not value:
            raise InvalidEvent("empty message")
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(_one_line(f"not JSON: {exc}")) from None
        if type(obj) is not dict:
            raise InvalidEvent("not a JSON object")
        if "specversion" in obj:
            obj = self._unwrap(obj)
        try:
            event: Event = validator.validate_python(obj, context=self._context)
        except ValidationError as exc:
            raise InvalidEvent(_reason(exc)) from None
        ahead = event.ts - now
        if ahead > self._max_future:
            raise InvalidEvent(f"occurred_at is {ahead:.0f} s in the future")
        if key is not None:
            self._check_key(key, event.lead_id)
        return event

    def _unwrap(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The event of a CloudEvents envelope, with id and time filling what data lacks."""
        try:
            envelope: CloudEventEnvelope = self._envelope.validate_python(obj)
        except ValidationError as exc:
            raise InvalidEvent(f"envelope: {_reason(exc)}") from None
        data = envelope.data  # a fresh dict: validation copied it
        data.setdefault("event_id", envelope.id)
        if "occurred_at" not in data and obj.get("time") is not None:
            data["occurred_at"] = obj["time"]  # the original text: the event validates it
        data[_CE_TYPE_KEY] = envelope.type
        data[_CE_SOURCE_KEY] = envelope.source
        return data

    @staticmethod
    def _check_key(key: bytes, lead_id: str) -> None:
        try:
            text = bytes(key).decode()
        except UnicodeDecodeError:
            raise InvalidEvent("key is not UTF-8") from None
        if text != lead_id:
            raise InvalidEvent(f"key {_short(text)} differs from lead_id {_short(lead_id)}")
