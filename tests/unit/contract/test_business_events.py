"""spec/business-events.md through EventParser.parse: the new fields and the three new events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streamproc.config import Settings
from streamproc.contract.events import (
    MAX_AMOUNT,
    MAX_PRODUCTS,
    AnyEvent,
    BusinessKind,
    CostRecorded,
    CustomerChurned,
    EventKind,
    EventParser,
    Kind,
    LeadCreated,
    NpsResponded,
    StageChanged,
)
from streamproc.exceptions import InvalidEvent

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC).timestamp()
COMMON = {"event_id": "e-1", "occurred_at": "2024-05-06T09:30:00Z"}
COST = COMMON | {"amount": 3100, "category": "marketing", "source": "google_ads"}
CHURN = COMMON | {"customer_id": "C-1"}
NPS = COMMON | {"customer_id": "C-1", "score": 9}
LEAD = COMMON | {"lead_id": "L-1", "rep_id": "r-1", "source": "web"}
WON = COMMON | {"lead_id": "L-1", "rep_id": "r-1", "to_stage": "won"}


@pytest.fixture(scope="module")
def parser() -> EventParser:
    return EventParser(Settings(_env_file=None))  # type: ignore[call-arg]


def parse(parser: EventParser, kind: Kind, value: dict[str, Any], key: bytes | None = None) -> Any:
    event: AnyEvent = parser.parse(kind, key, orjson.dumps(value), NOW)
    return event


def reason(parser: EventParser, kind: Kind, value: dict[str, Any], key: bytes | None = None) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse(parser, kind, value, key)
    return info.value.reason


def test_lead_created_customer_defaults_to_the_lead_and_segment_to_default(
    parser: EventParser,
) -> None:
    lead = parse(parser, EventKind.LEAD_CREATED, LEAD)
    assert isinstance(lead, LeadCreated)
    assert (lead.customer_id, lead.customer, lead.segment) == (None, "L-1", "default")
    given = parse(parser, EventKind.LEAD_CREATED, LEAD | {"customer_id": "C-9", "segment": None})
    assert (given.customer, given.segment) == ("C-9", "default")
    smb = parse(parser, EventKind.LEAD_CREATED, LEAD | {"segment": "smb"})
    assert smb.segment == "smb"


def test_won_stage_carries_products_with_default_quantity(parser: EventParser) -> None:
    products = [{"product_id": "crm"}, {"product_id": "voip", "quantity": 3, "amount": 90.5}]
    won = parse(parser, EventKind.STAGE_CHANGED, WON | {"products": products})
    assert isinstance(won, StageChanged) and won.products is not None
    assert [(p.product_id, p.quantity, p.amount) for p in won.products] == [
        ("crm", 1, None),
        ("voip", 3, 90.5),
    ]
    assert parse(parser, EventKind.STAGE_CHANGED, WON | {"products": None}).products is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"products": [{"product_id": "p"}] * 10_000}, "products has more than 100 entries"),
        ({"products": [{"product_id": "p", "quantity": 0}]}, "products.0.quantity must be > 0"),
        ({"products": [{"product_id": "p", "amount": -1}]}, "products.0.amount must be >= 0"),
        ({"products": [{"quantity": 2}]}, "missing field products.0.product_id"),
        ({"products": "crm"}, "products must be a list"),
    ],
)
def test_hostile_product_lists(parser: EventParser, change: dict[str, Any], expected: str) -> None:
    assert reason(parser, EventKind.STAGE_CHANGED, WON | change) == expected


def test_a_product_list_at_the_limit_is_valid(parser: EventParser) -> None:
    products = [{"product_id": f"p{i}"} for i in range(MAX_PRODUCTS)]
    won = parse(parser, EventKind.STAGE_CHANGED, WON | {"products": products})
    assert len(won.products) == MAX_PRODUCTS


def test_cost_recorded_with_and_without_a_period(parser: EventParser) -> None:
    cost = parse(parser, BusinessKind.COST_RECORDED, COST, key=b"anything")
    assert isinstance(cost, CostRecorded)
    assert (cost.amount, cost.category, cost.source, cost.period_start) == (
        3100,
        "marketing",
        "google_ads",
        None,
    )
    period = {"period_start": "2024-05-01T00:00:00Z", "period_end": "2024-06-01T00:00:00+00:00"}
    spread = parse(parser, BusinessKind.COST_RECORDED, COST | period)
    assert spread.period_end.timestamp() - spread.period_start.timestamp() == 31 * 86400


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (BusinessKind.COST_RECORDED, COST | {"amount": -0.01}, "amount must be >= 0"),
        (BusinessKind.COST_RECORDED, COST | {"amount": "10"}, "amount must be a number"),
        (
            BusinessKind.COST_RECORDED,
            COST | {"category": "travel"},
            "category must be 'marketing', 'sales', 'service' or 'other'",
        ),
        (
            BusinessKind.COST_RECORDED,
            COST | {"period_start": "2024-06-01T00:00:00Z", "period_end": "2024-05-01T00:00:00Z"},
            "period_end must be after period_start",
        ),
        (
            BusinessKind.COST_RECORDED,
            COST | {"period_start": "2024-06-01T00:00:00Z"},
            "period_start and period_end go together",
        ),
        (BusinessKind.NPS_RESPONDED, NPS | {"score": 11}, "score must be <= 10"),
        (BusinessKind.NPS_RESPONDED, NPS | {"score": -1}, "score must be >= 0"),
        (BusinessKind.NPS_RESPONDED, NPS | {"score": 9.5}, "score must be an integer"),
        (BusinessKind.CUSTOMER_CHURNED, CHURN | {"revenue_lost": -5}, "revenue_lost must be >= 0"),
        (BusinessKind.CUSTOMER_CHURNED, COMMON, "missing field customer_id"),
    ],
)
def test_hostile_business_events(
    parser: EventParser, kind: BusinessKind, value: dict[str, Any], expected: str
) -> None:
    assert reason(parser, kind, value) == expected


def test_churn_and_nps_are_keyed_by_customer_id(parser: EventParser) -> None:
    churn = parse(parser, BusinessKind.CUSTOMER_CHURNED, CHURN | {"reason": "price"}, b"C-1")
    assert isinstance(churn, CustomerChurned) and churn.reason == "price"
    nps = parse(parser, BusinessKind.NPS_RESPONDED, NPS, key=b"C-1")
    assert isinstance(nps, NpsResponded) and (nps.score, nps.rep_id) == (9, None)
    assert reason(parser, BusinessKind.NPS_RESPONDED, NPS, key=b"C-2") == (
        "key 'C-2' differs from customer_id 'C-1'"
    )


def test_business_event_in_a_cloudevents_envelope(parser: EventParser) -> None:
    envelope = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "billing",
        "type": "cost",
        "time": "2024-05-06T08:00:00Z",
        "data": {"amount": 5, "category": "other"},
    }
    cost = parse(parser, BusinessKind.COST_RECORDED, envelope)
    assert (cost.event_id, cost.ts, cost.ce_source) == (
        "ce-1",
        datetime(2024, 5, 6, 8, tzinfo=UTC).timestamp(),
        "billing",
    )


# Every number field without an upper bound in the contract, and where it sits in an event.
_NUMBER_FIELDS = [
    (EventKind.LEAD_CREATED, LEAD, lambda v: {"estimated_value": v}, "estimated_value"),
    (EventKind.STAGE_CHANGED, WON, lambda v: {"deal_value": v}, "deal_value"),
    (
        EventKind.STAGE_CHANGED,
        WON,
        lambda v: {"products": [{"product_id": "p", "amount": v}]},
        "products.0.amount",
    ),
    (
        EventKind.STAGE_CHANGED,
        WON,
        lambda v: {"products": [{"product_id": "p", "quantity": v}]},
        "products.0.quantity",
    ),
    (BusinessKind.COST_RECORDED, COST, lambda v: {"amount": v}, "amount"),
    (BusinessKind.CUSTOMER_CHURNED, CHURN, lambda v: {"revenue_lost": v}, "revenue_lost"),
]


@pytest.mark.parametrize(("kind", "base", "field", "loc"), _NUMBER_FIELDS)
def test_a_number_above_the_bound_is_invalid_and_says_what_to_do(
    parser: EventParser, kind: Kind, base: dict[str, Any], field: Any, loc: str
) -> None:
    # Two deals of 1e308 made revenue overflow to inf and the worker crash: a bound keeps
    # every sum of them finite (and exact to the unit).
    parse(parser, kind, base | field(MAX_AMOUNT))
    for huge in (MAX_AMOUNT * 1.000001, 1e308):
        text = reason(parser, kind, base | field(huge))
        assert text.startswith(f"{loc} is above 1e15, the largest number accepted"), text
        assert "units of the reporting currency" in text


def test_a_period_ending_years_after_the_cost_was_recorded_is_invalid(parser: EventParser) -> None:
    # Its shares would land in year 9999 (no local date beyond it in some zones) and the
    # windows' buckets would reach out to them; a prepaid two-year contract still fits.
    fits = {"period_start": "2024-05-06T00:00:00Z", "period_end": "2026-05-06T00:00:00Z"}
    parse(parser, BusinessKind.COST_RECORDED, COST | fits)
    for start, end in [
        ("2026-01-01T00:00:00Z", "2026-05-08T09:30:00Z"),
        ("9999-12-30T00:00:00Z", "9999-12-31T23:59:59-23:59"),
    ]:
        period = {"period_start": start, "period_end": end}
        assert reason(parser, BusinessKind.COST_RECORDED, COST | period) == (
            "period_end is more than 731 days after occurred_at: record a cost when it is "
            "incurred or invoiced"
        )
