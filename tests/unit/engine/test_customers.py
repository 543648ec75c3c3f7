"""Customers and the business KPIs through the engine: the issue's scenario, by hand, in any
order, with duplicates, and after a rebuild from the changelogged states."""

from __future__ import annotations

import random
import time

import pytest

from streamproc.config import Settings
from streamproc.engine.aggregates import Acc
from streamproc.engine.customer import CustomerState
from streamproc.engine.engine import BatchResult, Engine
from streamproc.engine.lead import LeadState
from streamproc.tools.sales_team import rfc3339
from tests.support.business import BusinessScenario, EngineRun, SeriesKey, is_customer_metric
from tests.support.scenario import noon_zone
from tests.support.truth import engine_samples, process_all

NOW = float(int(time.time()))
SETTINGS = Settings(_env_file=None, timezone=noon_zone(NOW))  # type: ignore[call-arg]
SCENARIO = BusinessScenario(NOW, Engine(SETTINGS, {}).clock)


def customer_kpis(engine: Engine, owners_only: bool = False) -> dict[SeriesKey, float]:
    out: dict[SeriesKey, float] = {}
    for s in engine_samples(engine, NOW + 1, owners_only):
        if not is_customer_metric(s.metric):
            continue
        labels = dict(s.labels)
        if s.window is not None:
            labels["window"] = s.window.name
        out[(s.metric, tuple(sorted(labels.items())))] = s.value
    return out


def run(order: list[int], batch: int) -> EngineRun:
    runner = EngineRun(SETTINGS)
    messages = [runner.raw(*SCENARIO.events[i]) for i in order]
    runner.feed(messages, NOW + 1, batch)
    return runner


def assert_truth(got: dict[SeriesKey, float]) -> None:
    truth = SCENARIO.expected()
    assert set(got) == set(truth), set(got) ^ set(truth)
    for key, value in truth.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("owners_only", [False, True], ids=["split+whole", "owners"])
def test_the_issue_scenario_by_hand(owners_only: bool) -> None:
    runner = run(list(range(len(SCENARIO.events))), batch=1000)
    assert_truth(customer_kpis(runner.engine, owners_only))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_order_duplicates_and_batch_sizes_give_the_same_numbers(seed: int) -> None:
    rng = random.Random(seed)
    order = list(range(len(SCENARIO.events)))
    order += rng.sample(order, len(order) // 3)  # a third sent twice
    rng.shuffle(order)
    runner = run(order, batch=rng.choice([1, 3, 7]))
    assert_truth(customer_kpis(runner.engine))


def test_rebuilt_from_the_changelogged_states_the_numbers_hold() -> None:
    runner = run(list(range(len(SCENARIO.events))), batch=5)
    engine = runner.engine
    leads = {k: LeadState.loads(v.dumps()) for k, v in engine.leads.items()}
    customers = {k: CustomerState.loads(v.dumps()) for k, v in engine.customers.items()}
    fresh = Engine(SETTINGS, leads, customers=customers)
    fresh.rebuild(range(runner.partitions), NOW + 1)
    assert_truth(customer_kpis(fresh))


def test_a_lead_whose_creation_comes_late_moves_its_deal_to_its_customer() -> None:
    runner = EngineRun(SETTINGS)
    won = ("stage-changed", SCENARIO.events[2][1])  # Y1's won deal
    created = ("lead-created", SCENARIO.events[1][1])
    assert won[1]["lead_id"] == created[1]["lead_id"] == "Y1"
    runner.feed([runner.raw(*won)], NOW + 1)
    assert runner.engine.customers["Y1"].won_deals()  # its own customer, for now
    runner.feed([runner.raw(*created)], NOW + 1)
    assert not runner.engine.customers["Y1"].won_deals()
    assert runner.engine.customers["CUST-Y1"].won_deals()[0].segment == "smb"
    kpis = customer_kpis(runner.engine)
    assert kpis[("sales_customers_active", (("segment", "smb"),))] == 1
    assert ("sales_customers_active", (("segment", "default"),)) not in kpis


def test_a_customers_revenue_counts_in_its_segment_whatever_its_later_leads_say() -> None:
    """``sales_customer_revenue``: "revenue won from the segment's customers". CUST-C is an
    enterprise customer (its first won deal's segment): an upsell lead of it that names no
    segment (``default``) is enterprise revenue, as its costs are enterprise costs."""
    runner = run(list(range(len(SCENARIO.events))), batch=1000)
    lead = {"lead_id": "U1", "rep_id": "r2"}
    created = {"source": "referral", "customer_id": "CUST-C", "existing_customer": True}
    won = {"to_stage": "won", "deal_value": 700}
    upsell = [
        ("lead-created", lead | {"event_id": "u-1", "occurred_at": rfc3339(NOW - 900)} | created),
        ("stage-changed", lead | {"event_id": "u-2", "occurred_at": rfc3339(NOW - 600)} | won),
    ]
    runner.feed([runner.raw(*event) for event in upsell], NOW + 1)
    kpis = customer_kpis(runner.engine)
    today = {
        (metric, dict(labels)["segment"]): value
        for (metric, labels), value in kpis.items()
        if metric in ("sales_customer_revenue", "sales_customer_profit")
        and dict(labels)["window"] == "today"
    }
    assert today[("sales_customer_revenue", "enterprise")] == 5700  # R1's 5,000 + 700
    assert today[("sales_customer_profit", "enterprise")] == 5675  # less its 25 of cost
    assert ("sales_customer_revenue", "default") not in today


def test_revenue_a_rollup_of_the_former_lead_fact_holds_is_not_counted_twice() -> None:
    """Revenue by segment was a lead's fact, ``segment_revenue``: the month rollups of leads
    forgotten then hold it, while their deals are their customers' and count there now.
    Restored, that family is skipped."""
    engine = run(list(range(len(SCENARIO.events))), batch=1000).engine
    before = customer_kpis(engine)
    acc = Acc()
    acc.add_sketched(5000.0, 1)
    month = str(engine.clock.month(NOW))
    for part in engine.partitions.values():
        part.restore({"segment_revenue": {("enterprise",): {month: acc}}})
    assert customer_kpis(engine) == before


def test_a_cost_spread_over_a_period_by_local_day() -> None:
    engine = Engine(SETTINGS, {})
    clock = engine.clock
    today = clock.day(NOW)
    start, end = clock.midnight(today - 1) + 6 * 3600, clock.midnight(today + 2)
    # 18 h of yesterday (0.75 of it), today and tomorrow whole: 2.75 days
    shares = list(engine.customer_facts.spread(NOW, 275.0, start, end))
    assert shares == [
        (start, pytest.approx(75.0)),
        (clock.midnight(today), pytest.approx(100.0)),
        (clock.midnight(today + 1), pytest.approx(100.0)),
    ]


def _outcomes(results: list[BatchResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for result in results:
        for (_, outcome), n in result.outcomes.items():
            out[outcome] = out.get(outcome, 0) + n
    return out


def _cost(event_id: str, occurred_at: float, **fields: object) -> dict[str, object]:
    base = {"event_id": event_id, "amount": 5, "category": "sales"}
    return base | {"occurred_at": rfc3339(occurred_at)} | fields


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+14:00", "0001-01-03T00:00:00Z"),
        ("0001-01-01T00:00:00+23:59", "0001-01-01T00:00:01-23:59"),
    ],
)
def test_a_cost_period_in_year_one_is_late_and_the_costs_after_it_count(
    zone: str, start: str, end: str
) -> None:
    # It raised 'year 0 is out of range' deriving the cost's local days: its batch was
    # read again every second for good, and no cost after it was ever applied.
    runner = EngineRun(Settings(_env_file=None, timezone=zone))  # type: ignore[call-arg]
    poison = _cost("c1", NOW - 60, period_start=start, period_end=end)
    results = process_all(
        runner.engine,
        [runner.raw("cost-recorded", poison), runner.raw("cost-recorded", _cost("c2", NOW - 60))],
        NOW,
    )
    assert _outcomes(results) == {"late": 1, "processed": 1}
    today = runner.engine.clock.bounds("today", NOW)
    costs = [
        acc.total for part in runner.engine.partitions.values()
        for _, acc in part.window_accs("cost", today)
    ]  # fmt: skip
    assert costs == [5.0]


def test_business_events_older_than_last_year_are_late_as_lead_events_are() -> None:
    # They were counted "processed"; the contract: older than the start of last_year, late.
    runner = EngineRun(SETTINGS)
    old = runner.engine.clock.period_watermark(NOW) - 86400
    period = {"period_start": rfc3339(old - 86400), "period_end": rfc3339(old)}
    straddling = {"period_start": rfc3339(old), "period_end": rfc3339(old + 3 * 86400)}
    at = {"occurred_at": rfc3339(old)}
    messages = [
        ("customer-churned", {"event_id": "h1", "customer_id": "Z"} | at),
        ("nps-responded", {"event_id": "n1", "customer_id": "Z", "score": 1} | at),
        ("cost-recorded", _cost("c1", old)),
        ("cost-recorded", _cost("c2", NOW - 60, **period)),  # recorded now, for an old period
        ("cost-recorded", _cost("c3", old, **straddling)),  # a day of it in last_year
        ("lead-created", {"event_id": "l1", "lead_id": "L", "rep_id": "r", "source": "s"} | at),
    ]
    results = process_all(runner.engine, [runner.raw(*m) for m in messages], NOW)
    assert _outcomes(results) == {"late": 5, "processed": 1}


def test_a_business_event_sent_twice_counts_once_processed_once_duplicate() -> None:
    """events.md holds for the business topics: the repeat is an outcome ``duplicate``,
    found where its customer is kept (the message arrives elsewhere, so it was once
    counted ``processed`` twice)."""
    runner = EngineRun(SETTINGS)
    business = [e for e in SCENARIO.events if e[0] != "lead-created" and "lead_id" not in e[1]]
    created = next(e for e in SCENARIO.events if e[0] == "lead-created")
    events = [created, *business]
    messages = [runner.raw(*e) for e in events] + [runner.raw(*e) for e in events]
    outcomes: dict[tuple[str, str], int] = {}
    for result in process_all(runner.engine, messages, NOW + 1, 7, runner.partitions):
        for key, n in result.outcomes.items():
            outcomes[key] = outcomes.get(key, 0) + n
    expected: dict[tuple[str, str], int] = {}
    for kind, _ in events:
        for outcome in ("processed", "duplicate"):
            key = (SETTINGS.topic(kind), outcome)
            expected[key] = expected.get(key, 0) + 1
    assert outcomes == expected
