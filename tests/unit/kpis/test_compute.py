"""KPI values read from one engine on the small scenario of tests/support/restated.py,
computed by hand: each value is what the contract says, with its arithmetic."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from streamproc.config import Settings
from tests.support.restated import (
    ABSENT_1H,
    ABSENT_TODAY,
    EXPECTED_1H,
    EXPECTED_TODAY,
    Event,
    RestatedScenario,
)
from tests.support.scenario import noon_zone
from tests.support.truth import Truth

NOW = float(int(time.time()))
SCENARIO = RestatedScenario(NOW)
# Local noon: every instant of the scenario is today.
SETTINGS = Settings(_env_file=None, timezone=noon_zone(NOW))  # type: ignore[call-arg]

Kpis = dict[tuple[str, str], float]


def _kpis(events: list[Event], window: str | None, settings: Settings = SETTINGS) -> Kpis:
    """metric, its labels as ``k=v,...`` (sorted) -> value, of one window (None: live),
    read a second after the events."""
    truth = Truth(settings)
    truth.feed(events, NOW)
    out = {}
    for (metric, labels), value in truth.kpis(NOW + 1).items():
        named = dict(labels)
        if named.pop("window", None) == window:
            out[(metric, ",".join(f"{k}={v}" for k, v in sorted(named.items())))] = value
    return out


def _of(kpis: Kpis, metric: str) -> dict[str, float]:
    return {labels: value for (m, labels), value in kpis.items() if m == metric}


def test_a_second_won_event_of_a_won_deal_counts_once_at_the_first() -> None:
    """A deal is won once, at its first won move: D1's second won event is no other deal,
    no other revenue, no other new customer; it restates D1, in the window of its win."""
    today, last_hour = _kpis(SCENARIO.wins(), "today"), _kpis(SCENARIO.wins(), "1h")
    for key in ("sales_deals_won", "sales_revenue_won", "sales_new_customers"):
        assert _of(today, key) == {k[1]: v for k, v in EXPECTED_TODAY.items() if k[0] == key}
        assert _of(last_hour, key) == {k[1]: v for k, v in EXPECTED_1H.items() if k[0] == key}
    assert today[("sales_upsell_ratio", "")] == EXPECTED_TODAY[("sales_upsell_ratio", "")]
    assert _of(today, "sales_win_ratio") == {"source=s_a": 1.0, "source=s_b": 1.0}
    assert _of(today, "sales_rep_win_ratio") == {"rep=d1": 1.0, "rep=d2": 1.0}
    assert _of(today, "sales_channel_win_ratio") == {"channel=none": 1.0}
    assert _of(today, "sales_customer_revenue") == {"segment=default": 8000}
    assert _of(today, "sales_customer_profit") == {"segment=default": 8000}  # no cost


_STAGE_KPIS = (
    "sales_stage_entries",
    "sales_stage_conversion_ratio",
    "sales_stage_dwell_seconds",
    "sales_stage_response_time_avg_seconds",
    "sales_deals_lost",
)


def test_a_move_to_the_stage_a_deal_is_in_is_no_entry_exit_or_activity() -> None:
    """D1's second won event and M1's second proposal and second lost restate the stage the
    deal is in: no entry, no exit (so no conversion of won or lost), no response."""
    events = SCENARIO.wins() + SCENARIO.moves()
    for window, expected, absent in (
        ("today", EXPECTED_TODAY, ABSENT_TODAY),
        ("1h", EXPECTED_1H, ABSENT_1H),
    ):
        got = _kpis(events, window)
        for key, value in expected.items():
            if key[0] in _STAGE_KPIS:
                assert got.get(key) == value, (window, key)
        assert [key for key in absent if key[0] in _STAGE_KPIS and key in got] == [], window
    today = _kpis(events, "today")
    assert _of(today, "sales_stage_entries") == {
        k[1]: v for k, v in EXPECTED_TODAY.items() if k[0] == "sales_stage_entries"
    }
    assert (
        today[("sales_win_ratio", "source=s_c")]
        == EXPECTED_TODAY[("sales_win_ratio", "source=s_c")]
    )


def test_cost_per_new_customer_counts_no_win_from_an_existing_customer() -> None:
    """New customers are the deals won from leads that were not existing customers
    (``sales_new_customers``): D2's win is none, so s_b's cost buys no new customer."""
    today = _kpis(SCENARIO.wins() + SCENARIO.costs(), "today")
    assert _of(today, "sales_cost_per_new_customer") == {
        k[1]: v for k, v in EXPECTED_TODAY.items() if k[0] == "sales_cost_per_new_customer"
    }
    assert all(key not in today for key in ABSENT_TODAY if key[0].startswith("sales_cost"))
    assert today[("sales_cost_per_lead", "source=s_b")] == 100  # D2 is a lead all the same


def test_a_source_nothing_was_spent_on_costs_0_a_lead_once_any_cost_is_recorded() -> None:
    """s_c's lead M1 had no marketing cost: 0 a lead, beside s_a's 300 / 2 and s_b's 100 / 1;
    the team 400 / 4 leads. Without any cost recorded, no cost series at all."""
    events = SCENARIO.wins() + SCENARIO.moves()
    today = _kpis(events + SCENARIO.costs(), "today")
    assert _of(today, "sales_cost_per_lead") == {
        "source=s_a": 150,
        "source=s_b": 100,
        "source=s_c": 0,
        "": 100,
    }
    assert not [key for key in _kpis(events, "today") if key[0].startswith("sales_cost_per")]


def test_the_oldest_waiting_lead_of_a_rep_with_none_waiting_is_0() -> None:
    """0 when none: for every rep who had a lead created in the periods kept (so had a lead
    waiting), not for a rep who only contacted leads of others (x)."""
    oldest = _of(_kpis(SCENARIO.waits(), None), "sales_oldest_awaiting_contact_seconds")
    assert oldest == {
        "rep=o": 0,  # its lead was contacted
        "rep=p": 0,
        "rep=w": 20 * 60 + 1,  # read a second after the events
    }


def test_reps_without_a_waiting_lead_fold_first_under_the_label_cap() -> None:
    """The cap keeps the busiest reps (those with waiting leads); o and p fold into other."""
    capped = SETTINGS.model_copy(update={"label_cap": 2})
    oldest = _of(_kpis(SCENARIO.waits(), None, capped), "sales_oldest_awaiting_contact_seconds")
    assert oldest == {"rep=w": 20 * 60 + 1, "rep=other": 0}


def test_a_ratio_under_the_label_cap_folds_its_numerator_as_its_denominator() -> None:
    """Six reps make one call each; x2, x4 and x6 connect. Capped at 3 values, the
    attempts keep the 2 busiest reps (all tie at 1: x1 and x2 by name) and fold x3 - x6
    into other: 4 attempts, 2 of them connected (x4, x6), so other's connect ratio is
    2 / 4 = 0.5. The connects alone are only 3 reps, under the cap: folded on their own
    they kept x4 and x6 apart, and other read 0 / 4."""
    capped = SETTINGS.model_copy(update={"label_cap": 3})
    events = []
    for i in range(1, 7):
        at = datetime.fromtimestamp(NOW - 600 + i, UTC).isoformat()
        events.append(
            (
                "contact-attempted",
                {"event_id": f"cap-{i}", "occurred_at": at, "lead_id": f"L{i}",
                 "rep_id": f"x{i}", "channel": "call", "connected": i % 2 == 0},
            )
        )  # fmt: skip
    today = _kpis(events, "today", capped)
    assert _of(today, "sales_contact_attempts") == {
        "channel=call,rep=x1": 1,
        "channel=call,rep=x2": 1,
        "channel=call,rep=other": 4,
    }
    assert _of(today, "sales_connect_ratio") == {
        "channel=call,rep=x1": 0.0,
        "channel=call,rep=x2": 1.0,
        "channel=call,rep=other": 0.5,
    }


def _won_with(products: list[list[str]]) -> list[Event]:
    """A won deal 10 minutes ago per product list, each of its own lead."""
    at = datetime.fromtimestamp(NOW - 600, UTC).isoformat()
    events: list[Event] = []
    for i, listed in enumerate(products):
        lead = {"event_id": f"p{i}", "occurred_at": at, "lead_id": f"P{i}", "rep_id": "r"}
        events.append(("lead-created", lead | {"source": "web"}))
        lines = [{"product_id": p} for p in listed]
        won = {"event_id": f"w{i}", "to_stage": "won", "products": lines}
        events.append(("stage-changed", lead | won))
    return events


def test_an_attach_ratio_under_the_label_cap_keeps_both_orders_of_a_kept_pair() -> None:
    """D1 - D3 won f alone, D4 won a and b, D5 won c and d. Capped at 3 values, the
    product wins keep f (3) and a (1, first by name of the ties) and fold b, c and d into
    other (3). The pairs keep (a, b), first by name of the ties, and fold (c, d): both
    orders of (a, b) are exported, each over its product's own wins (b's 1, though b is
    in other among the wins): 1/1. Folded as the wins, (other, other) was a sum of pairs
    over a sum of deals: with one deal of seven folded products, 42 / 7 = 6."""
    capped = SETTINGS.model_copy(update={"label_cap": 3})
    today = _kpis(_won_with([["f"], ["f"], ["f"], ["a", "b"], ["c", "d"]]), "today", capped)
    assert _of(today, "sales_product_wins") == {"product=f": 3, "product=a": 1, "product=other": 3}
    assert _of(today, "sales_product_attach_ratio") == {
        "product_a=a,product_b=b": 1.0,
        "product_a=b,product_b=a": 1.0,
    }


def test_the_label_cap_keeps_the_busiest_product_pairs() -> None:
    """business-events.md: "the busiest pairs within the label cap". m and n sold together 5
    times is the busiest pair; a to g, sold together once, are busy as single labels (a is
    product_a of 6 pairs) but in no pair as busy. With a cap of 3 (two products and
    ``other``), (m, n) stays and the 21 pairs of a to g fold into (other, other), of which no
    attach ratio is exported: a share of the deals with a product cannot be added up from
    its pairs (a ratio above 1 otherwise)."""
    capped = SETTINGS.model_copy(update={"label_cap": 3})
    today = _kpis(_won_with([list("abcdefg")] + [["m", "n"]] * 5), "today", capped)
    assert _of(today, "sales_product_pair_wins") == {
        "product_a=m,product_b=n": 5,
        "product_a=other,product_b=other": 21,
    }
    assert _of(today, "sales_product_attach_ratio") == {
        "product_a=m,product_b=n": 1.0,
        "product_a=n,product_b=m": 1.0,
    }
