"""Customers and costs do not pile up: four years of a business, a forgetting engine beside
one that keeps everything; the state levels off and every KPI of the periods stays the same."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from streamproc.config import Settings
from streamproc.engine.customer import CustomerState
from streamproc.engine.engine import CUSTOMER_IDLE_SECONDS, Engine
from streamproc.engine.lead import LeadState
from tests.support.business import EngineRun, is_customer_metric
from tests.support.truth import engine_samples

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
START = datetime(2022, 1, 3, 9, tzinfo=UTC).timestamp()  # a Monday
WEEK = 7 * 86400
Event = tuple[str, dict[str, Any]]
ACTIVE = 25  # active customers at any time, once the business is under way
# Customers come back among the last 30 to churn (about 15 weeks): not yet forgotten (one
# that comes back after is a new customer again, ``test_a_customer_back_after_...``)
RETURNS_FROM = 30


class Business:
    """A week at a time: new customers won, repeat wins, churns and returns, NPS answers,
    service costs of customers and monthly invoices without one."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.active: list[str] = []
        self.churned: list[str] = []
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"e{self.n}"

    def _at(self, t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    def _won(self, t: float, customer: str, out: list[Event]) -> None:
        base = {"lead_id": f"L{self.n}", "rep_id": self.rng.choice(["r1", "r2"])}
        created = base | {"source": "ads", "customer_id": customer, "segment": "smb"}
        self._add("lead-created", t, out, **created)
        self._add("stage-changed", t + 60, out, **base, to_stage="won", deal_value=100.0)

    def _add(self, kind: str, t: float, out: list[Event], **fields: Any) -> None:
        out.append((kind, {"event_id": self._id(), "occurred_at": self._at(t)} | fields))

    def week(self, t: float) -> list[Event]:
        out: list[Event] = []
        rng = self.rng
        for _ in range(2):  # new customers
            customer = f"C{self.n}"
            self._won(t, customer, out)
            self.active.append(customer)
        if self.active:  # a repeat win of a customer kept for years
            self._won(t + 600, rng.choice(self.active[:5]), out)
        self.churned = self.churned[-RETURNS_FROM:]
        if self.churned and rng.random() < 0.3:  # a customer coming back
            back = self.churned.pop(rng.randrange(len(self.churned)))
            self._won(t + 900, back, out)
            self.active.append(back)
        while len(self.active) > ACTIVE:  # as many leave as come; the first five never
            gone = self.active.pop(rng.randrange(5, len(self.active)))
            self._add("customer-churned", t + 1200, out, customer_id=gone, revenue_lost=10.0)
            self.churned.append(gone)
        for customer in rng.sample(self.active, min(2, len(self.active))):
            score = rng.randrange(11)
            self._add("nps-responded", t + 1800, out, customer_id=customer, score=score)
            self._add("cost-recorded", t + 1800, out, amount=5.0, category="service",
                      customer_id=customer)  # fmt: skip
        self._add("cost-recorded", t + 2400, out, amount=70.0, category="marketing", source="ads",
                  period_start=self._at(t), period_end=self._at(t + WEEK))  # fmt: skip
        return out


def size(engine: Engine) -> int:
    """The records the customers' state holds: one per customer, deal and event."""
    return sum(1 + len(c.deals) + len(c.events) for c in engine.customers.values())


def customer_kpis(engine: Engine, now: float) -> dict[tuple[str, str], float]:
    return {
        (s.metric, repr((s.window.name if s.window else None, sorted(s.labels.items())))): s.value
        for s in engine_samples(engine, now)
        if is_customer_metric(s.metric)
    }


def forget(engine: Engine, now: float) -> tuple[int, int]:
    gone, compacted = engine.forget_customers(now, engine.customer_candidates(now))
    return len(gone), len(compacted)


@pytest.fixture(scope="module")
def years() -> dict[str, Any]:
    """Four years, week by week; the forgetting engine runs its sweep every week."""
    business = Business(seed=7)
    kept, forgetting = EngineRun(SETTINGS), EngineRun(SETTINGS)
    sizes: dict[int, tuple[int, int]] = {}  # year -> (kept, forgetting) at its end
    forgotten = compacted = 0
    t = START
    for week in range(4 * 52):
        now = t + 3600
        events = business.week(t)
        for run in (kept, forgetting):
            run.feed([run.raw(*event) for event in events], now)
            run.engine.prune(now)
        f, c = forget(forgetting.engine, now)
        forgotten, compacted = forgotten + f, compacted + c
        if week % 52 == 51:
            sizes[week // 52] = (size(kept.engine), size(forgetting.engine))
        t += WEEK
    return {
        "kept": kept.engine,
        "forgetting": forgetting.engine,
        "sizes": sizes,
        "forgotten": forgotten,
        "compacted": compacted,
        "now": t - WEEK + 3600,
    }


def test_the_customers_state_levels_off_instead_of_growing(years: dict[str, Any]) -> None:
    sizes = years["sizes"]
    kept = [sizes[y][0] for y in range(4)]
    forgetting = [sizes[y][1] for y in range(4)]
    # Kept: every year adds about as much as the first (what the sweep is there for).
    assert kept[3] - kept[2] > 0.8 * kept[0]
    # Forgetting: as many customers leave as come, so once the churned ones of the first
    # year have left every window (``last_year``), it holds as much from year to year.
    assert forgetting[3] - forgetting[2] < 0.2 * (kept[3] - kept[2]), sizes
    assert forgetting[3] < 0.6 * kept[3], sizes
    assert years["forgotten"] > 0
    assert years["compacted"] > 0


def test_every_kpi_of_the_periods_is_the_same_as_without_forgetting(
    years: dict[str, Any],
) -> None:
    now = years["now"]
    want = customer_kpis(years["kept"], now)
    got = customer_kpis(years["forgetting"], now)
    assert {k[0] for k in want} >= {"sales_cost", "sales_nps_score", "sales_churn_ratio"}
    assert set(got) == set(want), set(got) ^ set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_rebuilt_from_the_compacted_changelog_the_numbers_hold(years: dict[str, Any]) -> None:
    now = years["now"]
    engine: Engine = years["forgetting"]
    leads = {k: LeadState.loads(v.dumps()) for k, v in engine.leads.items()}
    customers = {k: CustomerState.loads(v.dumps()) for k, v in engine.customers.items()}
    fresh = Engine(SETTINGS, leads, customers=customers)
    fresh.rebuild(range(3), now)
    assert customer_kpis(fresh, now) == pytest.approx(customer_kpis(years["kept"], now))


def churned_long_ago(run: EngineRun, now: float) -> CustomerState:
    """Won and churned two years before ``now`` (past last_year's start), changed at ``now``."""
    t = now - 2 * 366 * 86400
    events: list[Event] = []
    business = Business(seed=1)
    business._won(t, "OLD", events)
    business._add("customer-churned", t + 3600, events, customer_id="OLD")
    run.feed([run.raw(*event) for event in events], now)
    return run.engine.customers["OLD"]


def test_a_churned_customer_is_forgotten_only_once_unchanged_for_a_while() -> None:
    run = EngineRun(SETTINGS)
    now = START + 3 * 365 * 86400
    churned_long_ago(run, now)
    # just changed (a replay of history may still deliver a deal from before the churn)
    assert forget(run.engine, now + 60) == (0, 0)
    assert forget(run.engine, now + CUSTOMER_IDLE_SECONDS) == (1, 0)
    assert "OLD" not in run.engine.customers


def test_an_active_customer_is_kept_whatever_its_age() -> None:
    run = EngineRun(SETTINGS)
    now = START + 3 * 365 * 86400
    customer = churned_long_ago(run, now)
    business = Business(seed=2)
    business.n = 100  # another lead
    events: list[Event] = []
    business._won(customer.last_ts + 86400, "OLD", events)  # came back, still long ago
    run.feed([run.raw(*event) for event in events], now)
    assert forget(run.engine, now + CUSTOMER_IDLE_SECONDS) == (0, 1)
    kept = run.engine.customers["OLD"]
    # the first deal (its segment, its owner) and the win before last_year's start
    assert len(kept.won_deals()) == 2 and not kept.events
    samples = customer_kpis(run.engine, now)
    assert samples[("sales_customers_active", repr((None, [("segment", "smb")])))] == 1


def test_a_customer_back_after_it_was_forgotten_is_a_new_customer() -> None:
    run = EngineRun(SETTINGS)
    now = START + 3 * 365 * 86400
    churned_long_ago(run, now)
    forget(run.engine, now + CUSTOMER_IDLE_SECONDS)
    events: list[Event] = []
    business = Business(seed=3)
    business.n = 100  # another lead
    business._won(now, "OLD", events)
    run.feed([run.raw(*event) for event in events], now + 3600)
    customer = run.engine.customers["OLD"]
    facts = run.engine.customer_facts.facts(customer)
    # known afresh from the win: active from its time (no "new customer" fact any more: cost
    # per new customer counts the deals won from leads not existing customers, lead facts)
    assert [f[2] for f in facts if f[0] == "customer_activated"] == [now + 60]


def test_a_compacted_customer_read_back_is_no_candidate_again() -> None:
    """What ``compact`` keeps for good is not looked at again after a restart either."""
    run = EngineRun(SETTINGS)
    now = START + 3 * 365 * 86400
    churned_long_ago(run, now)
    business = Business(seed=2)
    business.n = 100  # another lead
    events: list[Event] = []
    business._won(now - 86400, "OLD", events)  # came back yesterday
    business._add("nps-responded", now - 2 * 366 * 86400 + 7200, events, customer_id="OLD",
                  score=3)  # fmt: skip
    run.feed([run.raw(*event) for event in events], now)
    assert forget(run.engine, now) == (0, 1)  # the answer went; the deals and churn stay
    assert list(run.engine.customer_candidates(now)) == []
    engine = run.engine
    engine.customers = {k: CustomerState.loads(c.dumps()) for k, c in engine.customers.items()}
    assert list(engine.customer_candidates(now)) == []
