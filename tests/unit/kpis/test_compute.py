"""KPI values read from one engine, on small scenarios computed by hand: each value below is
what the contract says, with its arithmetic in the comments."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from streamproc.config import Settings
from tests.support.scenario import noon_zone
from tests.support.truth import Truth

NOW = float(int(time.time()))
# Local noon: every instant below (at most 3 h ago) is today.
SETTINGS = Settings(_env_file=None, timezone=noon_zone(NOW))  # type: ignore[call-arg]


def _at(minutes_ago: float) -> str:
    return datetime.fromtimestamp(NOW - minutes_ago * 60, UTC).isoformat()


def _event(n: int, minutes_ago: float, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e{n}", "occurred_at": _at(minutes_ago)} | fields


def _lead(n: int, lead: str, rep: str, source: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    """A lead created 150 minutes ago."""
    event = _event(n, 150, lead_id=lead, rep_id=rep, source=source, **fields)
    return "lead-created", event


def _won(n: int, minutes_ago: float, lead: str, rep: str, **fields: Any) -> tuple[str, Any]:
    event = _event(n, minutes_ago, lead_id=lead, rep_id=rep, to_stage="won", **fields)
    return "stage-changed", event


# D1 won 2 h ago for 1,000, then a second won event of it (won to won, no value) 50 minutes
# ago; D2 from an existing customer won 2 h ago for 2,000; D3 won 50 minutes ago for 5,000. The
# second won event of D1 comes first: the order of arrival changes nothing.
WINS = [
    _lead(1, "D1", "d1", "s_a"),
    _lead(2, "D2", "d2", "s_b", existing_customer=True),
    _lead(3, "D3", "d1", "s_a"),
    _won(4, 50, "D1", "d1", from_stage="won"),
    _won(5, 120, "D1", "d1", deal_value=1000),
    _won(6, 120, "D2", "d2", deal_value=2000),
    _won(7, 50, "D3", "d1", deal_value=5000),
]


def _kpis(
    events: list[tuple[str, Any]], window: str | None, settings: Settings = SETTINGS
) -> dict[tuple[str, str], float]:
    """metric, its labels as ``k=v,...`` (sorted) -> value, of one window (None: live)."""
    truth = Truth(settings)
    truth.feed(events, NOW)
    out = {}
    for (metric, labels), value in truth.kpis(NOW + 1).items():
        named = dict(labels)
        if named.pop("window", None) == window:
            out[(metric, ",".join(f"{k}={v}" for k, v in sorted(named.items())))] = value
    return out


def test_a_second_won_event_of_a_won_deal_counts_once_at_the_first() -> None:
    """A deal is won once, at its first won move: D1's second won event is no other deal,
    no other revenue, no other new customer; it restates D1, in the window of its win."""
    today, last_hour = _kpis(WINS, "today"), _kpis(WINS, "1h")
    assert today[("sales_deals_won", "rep=d1,source=s_a")] == 2  # D1, D3
    assert today[("sales_revenue_won", "rep=d1")] == 6000  # 1,000 + 5,000
    assert today[("sales_new_customers", "rep=d1,source=s_a")] == 2  # D1, D3
    assert today[("sales_upsell_ratio", "")] == round(1 / 3, 6)  # D2 of D1, D2, D3
    assert today[("sales_win_ratio", "source=s_a")] == 1.0
    assert today[("sales_rep_win_ratio", "rep=d1")] == 1.0
    assert today[("sales_channel_win_ratio", "channel=none")] == 1.0
    assert today[("sales_customer_revenue", "segment=default")] == 8000  # 1,000 + 2,000 + 5,000
    assert today[("sales_customer_profit", "segment=default")] == 8000
    # the last hour holds D3's win only: D1's second won event is not a win of its own
    assert last_hour[("sales_deals_won", "rep=d1,source=s_a")] == 1
    assert last_hour[("sales_revenue_won", "rep=d1")] == 5000
    assert last_hour[("sales_new_customers", "rep=d1,source=s_a")] == 1


def _cost(n: int, amount: float, source: str) -> tuple[str, dict[str, Any]]:
    return "cost-recorded", _event(n, 30, amount=amount, category="marketing", source=source)


def test_cost_per_new_customer_counts_no_win_from_an_existing_customer() -> None:
    """New customers are the deals won from leads that were not existing customers
    (``sales_new_customers``): D2's win is none, so s_b's cost buys no new customer."""
    today = _kpis([*WINS, _cost(8, 300, "s_a"), _cost(9, 100, "s_b")], "today")
    per_new = {labels: v for (m, labels), v in today.items() if m == "sales_cost_per_new_customer"}
    assert per_new == {
        "source=s_a": 150,  # 300 / D1, D3
        "": 200,  # the team: 400 / D1, D3
    }
    assert today[("sales_cost_per_lead", "source=s_b")] == 100  # D2 is a lead all the same


# O1 (rep o) created 10 minutes ago, contacted 5 minutes ago by rep x; W1 (rep w) created
# 20 minutes ago, still waiting; P1 (rep p) created 2 h ago, contacted since.
WAITS = [
    ("lead-created", _event(1, 10, lead_id="O1", rep_id="o", source="web")),
    ("lead-created", _event(2, 20, lead_id="W1", rep_id="w", source="web")),
    ("lead-created", _event(3, 120, lead_id="P1", rep_id="p", source="web")),
    ("contact-attempted", _event(4, 5, lead_id="O1", rep_id="x", channel="call", connected=False)),
    ("contact-attempted", _event(5, 100, lead_id="P1", rep_id="p", channel="sms", connected=True)),
]


def _oldest(kpis: dict[tuple[str, str], float]) -> dict[str, float]:
    return {k: v for (m, k), v in kpis.items() if m == "sales_oldest_awaiting_contact_seconds"}


def test_the_oldest_waiting_lead_of_a_rep_with_none_waiting_is_0() -> None:
    """0 when none: for every rep who had a lead created in the periods kept (so had a lead
    waiting), not for a rep who only contacted leads of others (x)."""
    assert _oldest(_kpis(WAITS, None)) == {
        "rep=o": 0,  # its lead was contacted
        "rep=p": 0,
        "rep=w": 20 * 60 + 1,  # read a second after the events
    }


def test_reps_without_a_waiting_lead_fold_first_under_the_label_cap() -> None:
    """The cap keeps the busiest reps (those with waiting leads); o and p fold into other."""
    capped = SETTINGS.model_copy(update={"label_cap": 2})
    assert _oldest(_kpis(WAITS, None, capped)) == {"rep=w": 20 * 60 + 1, "rep=other": 0}
