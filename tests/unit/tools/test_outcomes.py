"""The simulated business outcomes: contract-valid, with the shapes the issue asks for."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from statistics import mean

import orjson

from streamproc.config import Settings
from streamproc.contract.events import BusinessKind, EventKind, EventParser
from streamproc.tools.outcomes import MONTH, SPEND_PER_LEAD, LeadOutcomes
from streamproc.tools.sales_team import History, SalesTeam

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
START = 1_796_000_000.0  # a fixed start: the ids, and so every draw, are the same each run


def _team(outcomes: bool = True) -> SalesTeam:
    history = History(days=7, leads_per_day=300, warm_seconds=600, pace=4.0)
    return SalesTeam.for_rate(
        SETTINGS, 10, 8, start=START, pace=150, history=history, outcomes=outcomes
    )


TEAM = _team()
EVENTS = TEAM.invoices() + TEAM.past_events()


def _kind(name: str) -> EventKind | BusinessKind:
    return EventKind(name) if name in {k.value for k in EventKind} else BusinessKind(name)


def test_every_event_is_valid_and_keyed_as_the_contract_says() -> None:
    parser = EventParser(SETTINGS)
    kinds = Counter()
    for kind, event in EVENTS:
        key = event.get("lead_id") or event.get("customer_id") or event["event_id"]
        parser.parse(_kind(kind), key.encode(), orjson.dumps(event), START + 1)
        kinds[kind] += 1
    assert kinds["cost-recorded"] and kinds["nps-responded"]


def test_monthly_invoices_one_per_paid_source_and_month() -> None:
    invoices = [e for k, e in EVENTS if k == "cost-recorded" and e["category"] == "marketing"]
    months = Counter(e["period_start"][:7] for e in invoices)
    assert len(months) == 2 and set(months.values()) == {len(SPEND_PER_LEAD)}
    assert all(e["period_end"] > e["period_start"] and e["amount"] > 0 for e in invoices)


def test_won_deals_carry_bundles_that_sell_together() -> None:
    wins = [e for k, e in EVENTS if k == "stage-changed" and e["to_stage"] == "won"]
    assert len(wins) > 50
    assert all(e["products"] for e in wins)
    pairs: Counter[tuple[str, str]] = Counter()
    crm = 0
    for e in wins:
        ids = sorted({p["product_id"] for p in e["products"]})
        crm += "crm" in ids
        pairs.update(combinations(ids, 2))
    assert crm / len(wins) > 0.85
    assert len(pairs) >= 5 and pairs.most_common(1)[0][1] > len(wins) / 4


def test_nps_after_won_deals_differs_by_rep_and_churn_is_a_few_percent() -> None:
    created = {e["lead_id"]: e for k, e in EVENTS if k == "lead-created"}
    wins = {e["lead_id"]: e for k, e in EVENTS if k == "stage-changed" and e["to_stage"] == "won"}
    customer_of = {lid: created[lid].get("customer_id", lid) for lid in wins if lid in created}
    rep_of = {customer_of[lid]: e["rep_id"] for lid, e in wins.items() if lid in customer_of}
    won_at: dict[str, str] = {}  # a customer's first win
    for lid, e in wins.items():
        if lid in customer_of:
            cid = customer_of[lid]
            won_at[cid] = min(won_at.get(cid, e["occurred_at"]), e["occurred_at"])
    scores: dict[str, list[int]] = defaultdict(list)
    for kind, e in EVENTS:
        if kind == "nps-responded" and e["customer_id"] in rep_of:
            assert e["occurred_at"] > won_at[e["customer_id"]]  # after the win
            scores[rep_of[e["customer_id"]]].append(e["score"])
    means = [mean(s) for s in scores.values() if len(s) >= 3]
    assert len(means) >= 4 and max(means) - min(means) > 1.0
    churned = {e["customer_id"] for k, e in EVENTS if k == "customer-churned"}
    assert len(churned) / len(rep_of) < 0.15


def test_churn_is_a_few_percent_a_month() -> None:
    """Of 20,000 customers won at 0 (pace 1), the share that churns within each month."""
    churns = []
    for i in range(20_000):
        after = LeadOutcomes(f"lead-{i}", existing=False).after_win(0.0, 1.0, pace=1.0)
        churns += [at for at, kind, _ in after if kind == "customer-churned"]
    first, second = (sum(1 for t in churns if m * MONTH <= t < (m + 1) * MONTH) for m in (0, 1))
    assert 0.025 < first / 20_000 < 0.035  # 3 % of them
    assert 0.025 < second / (20_000 - first) < 0.035  # 3 % of those left


def test_without_outcomes_the_lead_events_are_as_before() -> None:
    plain = [(k, e) for k, e in _team(outcomes=False).past_events()]
    ours = [
        (k, {f: v for f, v in e.items() if f not in ("segment", "customer_id", "products")})
        for k, e in EVENTS
        if k in {kind.value for kind in EventKind}
    ]
    assert plain == ours
