"""The input events (spec/events.md) as strict pydantic models; every free string is 1-128 chars."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, overload

import orjson
from pydantic import (
    AfterValidator,
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
    "BUSINESS_MODELS",
    "EVENT_MODELS",
    "MAX_AMOUNT",
    "MAX_PERIOD_DAYS",
    "MAX_PRODUCTS",
    "RFC3339_PATTERN",
    "AnyEvent",
    "BusinessEvent",
    "BusinessKind",
    "CloudEventEnvelope",
    "ContactAttempted",
    "CostRecorded",
    "CustomerChurned",
    "EmailOpened",
    "Event",
    "EventKind",
    "EventParser",
    "Kind",
    "LeadCreated",
    "NpsResponded",
    "ProductLine",
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


class BusinessKind(StrEnum):
    """The three business outcome events (spec/business-events.md), on optional topics."""

    COST_RECORDED = "cost-recorded"
    CUSTOMER_CHURNED = "customer-churned"
    NPS_RESPONDED = "nps-responded"


Kind: TypeAlias = EventKind | BusinessKind
# The contract's limit on a won deal's product list: a list of 10,000 is invalid, not cut.
MAX_PRODUCTS = 100
# A cost is spread over the days of its period, one share a day: a longer period than two
# years (annual contracts, leap year included, fit) is invalid rather than thousands of shares.
MAX_PERIOD_DAYS = 731
# The largest amount (deal value, cost, product amount, revenue lost) or quantity accepted:
# 10^15 is beyond any real deal in any currency, float64 still holds every whole unit below
# it exactly (2^53 ~ 9.007e15), and a sum of a billion of them stays finite. Two deal values
# of 1e308 overflowed the revenue to inf and crashed the worker.
MAX_AMOUNT = 1e15


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


def _blank_is_absent(value: object) -> object:
    """An optional text may be left out, null or empty: producers write all three for "no
    value" (a CRM's export of an unset field is often ""); none of them is bad input."""
    return None if value == "" else value


def _default_team(value: object) -> object:
    return "default" if value is None or value == "" else value


def _false_if_null(value: object) -> object:
    # An optional flag: null is "not given", as absent (docs/events.md), not bad input.
    return False if value is None else value


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_to_datetime), WithJsonSchema(_TIMESTAMP_SCHEMA)
]


def _at_most_max_amount(value: float) -> float:
    if value > MAX_AMOUNT:
        raise PydanticCustomError(
            "amount_too_large",
            "is above 1e15, the largest number accepted: send amounts in units of the "
            "reporting currency (not scaled), and fix the producer that sent this",
        )
    return value


_AMOUNT_MAXIMUM = {"maximum": MAX_AMOUNT}
NonNegative = Annotated[
    float,
    Field(ge=0, allow_inf_nan=False, json_schema_extra=_AMOUNT_MAXIMUM),
    AfterValidator(_at_most_max_amount),
]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_OPTIONAL_TEXT_SCHEMA = {"type": "string", "maxLength": MAX_TEXT}  # "": no value
OptionalText = Annotated[
    Text | None, BeforeValidator(_blank_is_absent), WithJsonSchema(_OPTIONAL_TEXT_SCHEMA)
]
# An optional id (customer_id, a rep_id where it may be left out): absent or null, never
# "" (events.md and business-events.md bound the ids to 1-128 chars)
_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
OptionalId = Annotated[Text | None, BeforeValidator(_null_is_absent), WithJsonSchema(_ID_SCHEMA)]
# null, absent or "": "default"
DefaultedText = Annotated[
    Text, BeforeValidator(_default_team), WithJsonSchema(_OPTIONAL_TEXT_SCHEMA)
]
OptionalNonNegative = Annotated[
    NonNegative | None,
    BeforeValidator(_null_is_absent),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": MAX_AMOUNT}),
]
OptionalProbability = Annotated[
    Probability | None,
    BeforeValidator(_null_is_absent),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1}),
]
Channel = Literal["call", "email", "sms", "social", "meeting", "other"]


class _Common(BaseModel):
    """Fields common to every event, the lead events and the business events alike."""

    # strict: a JSON bool is no number, a string no number and a number no string.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    kind: ClassVar[Kind]
    # The field the Kafka key must equal when present (None: any key).
    key_field: ClassVar[str | None]

    event_id: Text = Field(description="Unique per event; a repeat is a duplicate.")
    occurred_at: Timestamp = Field(description="Event time, with an offset.")
    # The envelope's type and source, kept for tracing; not part of the contract. Read from keys
    # no producer sends, so that a plain event's own "ce_type" stays an ignored unknown field;
    # in Python, set them with model_copy(update=...).
    ce_type: SkipJsonSchema[str | None] = Field(default=None, validation_alias=_CE_TYPE_KEY)
    ce_source: SkipJsonSchema[str | None] = Field(default=None, validation_alias=_CE_SOURCE_KEY)

    @cached_property
    def ts(self) -> float:
        """``occurred_at`` as epoch seconds."""
        return self.occurred_at.timestamp()


class _EventBase(_Common):
    """Fields common to the four lead events."""

    kind: ClassVar[EventKind]
    key_field: ClassVar[str | None] = "lead_id"

    lead_id: Text = Field(description="The lead (prospect) the event is about.")
    rep_id: Text = Field(description="The sales rep who owns the lead or acted.")
    team_id: DefaultedText = Field(
        default="default", description="The rep's team (null, absent or empty: default)."
    )


class LeadCreated(_EventBase):
    """A new lead entered the pipeline."""

    kind: ClassVar[EventKind] = EventKind.LEAD_CREATED

    source: Text = Field(description="Where the lead came from: google_ads, referral, ...")
    existing_customer: Annotated[bool, BeforeValidator(_false_if_null)] = Field(
        default=False, description="Upsell / cross-sell lead (null or absent: false)."
    )
    estimated_value: OptionalNonNegative = Field(default=None, description="First value guess.")
    customer_id: OptionalId = Field(
        default=None,
        description="The account the lead belongs to (absent: the lead_id, a new customer).",
    )
    segment: DefaultedText = Field(
        default="default",
        description="Customer segment: smb, mid_market, enterprise, ... (null, absent or "
        "empty: default)",
    )

    @property
    def customer(self) -> str:
        """The account: ``customer_id``, else the lead itself (a new customer)."""
        return self.customer_id or self.lead_id


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


class ProductLine(BaseModel):
    """One product of a won deal."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    product_id: Text = Field(description="The product sold.")
    quantity: Annotated[
        float,
        Field(gt=0, allow_inf_nan=False, json_schema_extra=_AMOUNT_MAXIMUM),
        AfterValidator(_at_most_max_amount),
    ] = Field(default=1, description="How many (> 0, at most 1e15, default 1).")
    amount: OptionalNonNegative = Field(default=None, description="Its share of the deal value.")


Products = Annotated[list[ProductLine], Field(max_length=MAX_PRODUCTS)]


class StageChanged(_EventBase):
    """The lead's deal moved in the pipeline.

    to_stage must be one of the configured stages (default: new, contacted, qualified, proposal,
    negotiation, won, lost) and lost_reason is required when to_stage is the lost stage (default:
    lost). Both depend on the settings, so the JSON Schema cannot check them.
    """

    # Validate with context={"settings": settings} to check against the configured pipeline;
    # without a context the default pipeline applies.
    kind: ClassVar[EventKind] = EventKind.STAGE_CHANGED

    from_stage: Annotated[
        Text | None,
        BeforeValidator(_blank_is_absent),
        WithJsonSchema({"anyOf": [_OPTIONAL_TEXT_SCHEMA, {"type": "null"}]}),
    ] = Field(
        default=None,
        description="The previous stage; null (absent or empty) for the first stage.",
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
    products: Annotated[Products | None, BeforeValidator(_null_is_absent)] = Field(
        default=None,
        description=f"On the won stage: the products sold (at most {MAX_PRODUCTS}); a later "
        "won event of the same deal replaces the list. Ignored on other stages.",
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
    rep_id: OptionalId = Field(default=None, description="The rep, when known.")  # type: ignore[assignment]
    message_id: Text = Field(description="The message_id of the contact-attempted that sent it.")
    clicked: Annotated[bool, BeforeValidator(_false_if_null)] = Field(
        default=False, description="A link was clicked (a click is an open; null or absent: no)."
    )


Event: TypeAlias = LeadCreated | ContactAttempted | StageChanged | EmailOpened

EVENT_MODELS: Mapping[EventKind, type[Event]] = {
    model.kind: model for model in (LeadCreated, ContactAttempted, StageChanged, EmailOpened)
}

CostCategory = Literal["marketing", "sales", "service", "other"]


class CostRecorded(_Common):
    """A cost: an ad invoice, a tool, a service call; spread by day over its period if given."""

    model_config = ConfigDict(
        # period_end after period_start is checked by the worker only: JSON Schema cannot.
        json_schema_extra={
            "dependentRequired": {"period_start": ["period_end"], "period_end": ["period_start"]}
        }
    )
    kind: ClassVar[Kind] = BusinessKind.COST_RECORDED
    key_field: ClassVar[str | None] = None

    amount: NonNegative = Field(description="The amount, in the reporting currency (0 to 1e15).")
    category: CostCategory = Field(description="marketing, sales, service or other.")
    source: OptionalText = Field(
        default=None, description="The lead source a marketing cost bought (google_ads, ...)."
    )
    segment: OptionalText = Field(default=None, description="The customer segment it served.")
    customer_id: OptionalId = Field(default=None, description="A cost of serving that customer.")
    period_start: Annotated[Timestamp | None, BeforeValidator(_null_is_absent)] = Field(
        default=None, description="With period_end: spread evenly over its local days."
    )
    period_end: Annotated[Timestamp | None, BeforeValidator(_null_is_absent)] = Field(
        default=None, description="The end of the period, excluded; after period_start."
    )

    @model_validator(mode="after")
    def _period(self) -> CostRecorded:
        start, end = self.period_start, self.period_end
        if (start is None) != (end is None):
            raise PydanticCustomError("rule", "period_start and period_end go together")
        if start is not None and end is not None:
            if end <= start:
                raise PydanticCustomError("rule", "period_end must be after period_start")
            if (end - start).total_seconds() > MAX_PERIOD_DAYS * 86400:
                raise PydanticCustomError(
                    "rule", "the period is longer than {days} days", {"days": MAX_PERIOD_DAYS}
                )
            self._not_far_ahead(end)
        return self

    def _not_far_ahead(self, end: datetime) -> None:
        """Shares years ahead (up to 9999) would land where no local date exists and make
        the windows' buckets reach out to them; a prepaid two-year contract still fits."""
        if (end - self.occurred_at).total_seconds() > MAX_PERIOD_DAYS * 86400:
            raise PydanticCustomError(
                "rule",
                "period_end is more than {days} days after occurred_at: record a cost when "
                "it is incurred or invoiced",
                {"days": MAX_PERIOD_DAYS},
            )


class CustomerChurned(_Common):
    """A customer left."""

    kind: ClassVar[Kind] = BusinessKind.CUSTOMER_CHURNED
    key_field: ClassVar[str | None] = "customer_id"

    customer_id: Text = Field(description="The customer that left.")
    reason: OptionalText = Field(default=None, description="Why: price, service, competitor, ...")
    revenue_lost: OptionalNonNegative = Field(default=None, description="Revenue lost (0 to 1e15).")


class NpsResponded(_Common):
    """A customer answered the Net Promoter question (0-10)."""

    kind: ClassVar[Kind] = BusinessKind.NPS_RESPONDED
    key_field: ClassVar[str | None] = "customer_id"

    customer_id: Text = Field(description="The customer who answered.")
    score: Annotated[int, Field(ge=0, le=10)] = Field(
        description="0-10: 9-10 promoter, 7-8 passive, 0-6 detractor."
    )
    rep_id: OptionalId = Field(
        default=None, description="The rep it is about (absent: the customer's owner)."
    )


BusinessEvent: TypeAlias = CostRecorded | CustomerChurned | NpsResponded
AnyEvent: TypeAlias = Event | BusinessEvent

BUSINESS_MODELS: Mapping[BusinessKind, type[BusinessEvent]] = {
    model.kind: model  # type: ignore[misc]
    for model in (CostRecorded, CustomerChurned, NpsResponded)
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
    "int_type": "{loc} must be an integer",
    "greater_than": "{loc} must be > {gt}",
    "list_type": "{loc} must be a list",
    "too_long": "{loc} has more than {max_length} entries",
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
        models: list[tuple[Kind, type[AnyEvent]]] = [
            *EVENT_MODELS.items(),
            *BUSINESS_MODELS.items(),
        ]
        self._validators = {kind: m.__pydantic_validator__ for kind, m in models}
        self._envelope = CloudEventEnvelope.__pydantic_validator__

    @overload
    def parse(self, kind: EventKind, key: bytes | None, value: bytes, now: float) -> Event: ...
    @overload
    def parse(
        self, kind: BusinessKind, key: bytes | None, value: bytes, now: float
    ) -> BusinessEvent: ...
    def parse(self, kind: Kind, key: bytes | None, value: bytes, now: float) -> AnyEvent:
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

    def _parse(self, validator: Any, key: bytes | None, value: bytes, now: float) -> AnyEvent:
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
            event: AnyEvent = validator.validate_python(obj, context=self._context)
        except ValidationError as exc:
            raise InvalidEvent(_reason(exc)) from None
        ahead = event.ts - now
        if ahead > self._max_future:
            raise InvalidEvent(f"occurred_at is {ahead:.0f} s in the future")
        field = event.key_field
        if key is not None and field is not None:
            self._check_key(key, field, getattr(event, field))
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
    def _check_key(key: bytes, field: str, expected: str) -> None:
        try:
            text = bytes(key).decode()
        except UnicodeDecodeError:
            raise InvalidEvent("key is not UTF-8") from None
        if text != expected:
            raise InvalidEvent(f"key {_short(text)} differs from {field} {_short(expected)}")
