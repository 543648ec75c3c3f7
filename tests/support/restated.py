"""A small scenario computed by hand: a won deal won again, a win from an existing customer
with marketing cost on its source, a deal moved twice to proposal and lost twice, and leads
waiting or contacted. Read at local noon
(``noon_zone``), every instant of it (at most 150 minutes ago) is today; ``expected``
holds the values of the series it is about, with the arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Event = tuple[str, dict[str, Any]]  # (kind, event)


class RestatedScenario:
    def __init__(self, now: float) -> None:
        self.now = float(int(now))
        self._n = 0

    def _event(self, kind: str, minutes_ago: float, **fields: Any) -> Event:
        self._n += 1
        at = datetime.fromtimestamp(self.now - minutes_ago * 60, UTC).isoformat()
        return kind, {"event_id": f"h-{self._n}", "occurred_at": at} | fields

    def _lead(self, minutes_ago: float, lead: str, rep: str, source: str, **kw: Any) -> Event:
        return self._event("lead-created", minutes_ago, lead_id=lead, rep_id=rep, source=source,
                           **kw)  # fmt: skip

    def _won(self, minutes_ago: float, lead: str, rep: str, **fields: Any) -> Event:
        fields |= {"lead_id": lead, "rep_id": rep, "to_stage": "won"}
        return self._event("stage-changed", minutes_ago, **fields)

    def wins(self) -> list[Event]:
        """D1 won 2 h ago for 1,000, then a second won event of it (won to won, no value) 50
        minutes ago, sent first; D2 of an existing customer won 2 h ago for 2,000; D3 won 50
        minutes ago for 5,000."""
        return [
            self._lead(150, "D1", "d1", "s_a"),
            self._lead(150, "D2", "d2", "s_b", existing_customer=True),
            self._lead(150, "D3", "d1", "s_a"),
            self._won(50, "D1", "d1", from_stage="won"),
            self._won(120, "D1", "d1", deal_value=1000),
            self._won(120, "D2", "d2", deal_value=2000),
            self._won(50, "D3", "d1", deal_value=5000),
        ]

    def _move(self, minutes_ago: float, stage: str, **fields: Any) -> Event:
        fields |= {"lead_id": "M1", "rep_id": "m", "to_stage": stage}
        return self._event("stage-changed", minutes_ago, **fields)

    def moves(self) -> list[Event]:
        """M1 (rep m, source s_c) in proposal 120 minutes ago, moved to proposal again 55
        minutes ago (a value given), to negotiation 40 minutes ago, lost 30 minutes ago and
        lost again 20 minutes ago; each repeat sent before the move it repeats."""
        return [
            self._lead(150, "M1", "m", "s_c"),
            self._move(55, "proposal", from_stage="proposal", deal_value=700),
            self._move(120, "proposal"),
            self._move(40, "negotiation", from_stage="proposal"),
            self._move(20, "lost", from_stage="lost", lost_reason="timing"),
            self._move(30, "lost", from_stage="negotiation", lost_reason="price"),
        ]

    def costs(self) -> list[Event]:
        """Marketing cost 30 minutes ago: 300 for s_a, 100 for s_b (whose only win is D2)."""
        return [
            self._event("cost-recorded", 30, amount=amount, category="marketing", source=source)
            for amount, source in ((300, "s_a"), (100, "s_b"))
        ]

    def waits(self) -> list[Event]:
        """O1 (rep o) created 10 minutes ago, contacted 5 minutes ago by rep x; W1 (rep w)
        created 20 minutes ago, waiting; P1 (rep p) created 2 h ago, contacted since."""
        contact = {"channel": "call", "connected": False}
        return [
            self._lead(10, "O1", "o", "web"),
            self._lead(20, "W1", "w", "web"),
            self._lead(120, "P1", "p", "web"),
            self._event("contact-attempted", 5, lead_id="O1", rep_id="x", **contact),
            self._event("contact-attempted", 100, lead_id="P1", rep_id="p", **contact),
        ]

    def events(self) -> list[Event]:
        return self.wins() + self.moves() + self.costs() + self.waits()


# (metric, labels as ``k=v,...`` sorted) -> value, in ``today`` (None: a live gauge)
EXPECTED_TODAY: dict[tuple[str, str], float] = {
    ("sales_deals_won", "rep=d1,source=s_a"): 2,  # D1 once, D3
    ("sales_deals_won", "rep=d2,source=s_b"): 1,
    ("sales_revenue_won", "rep=d1"): 6000,  # 1,000 + 5,000
    ("sales_revenue_won", "rep=d2"): 2000,
    ("sales_new_customers", "rep=d1,source=s_a"): 2,  # D1, D3; D2 was a customer
    ("sales_upsell_ratio", ""): 0.333333,  # D2 of D1, D2, D3
    ("sales_win_ratio", "source=s_a"): 1,
    ("sales_customer_revenue", "segment=default"): 8000,  # 1,000 + 2,000 + 5,000
    ("sales_cost_per_new_customer", "source=s_a"): 150,  # 300 / D1, D3
    ("sales_cost_per_new_customer", ""): 200,  # 400 / D1, D3
    # A move to the stage a deal is in is no entry, no exit and no activity: D1's second won
    # event, M1's second proposal and second lost
    ("sales_stage_entries", "stage=won"): 3,  # D1 once, D2, D3
    ("sales_stage_entries", "stage=proposal"): 1,  # M1 once
    ("sales_stage_entries", "stage=negotiation"): 1,
    ("sales_stage_entries", "stage=lost"): 1,  # M1 once
    ("sales_stage_conversion_ratio", "stage=proposal"): 1,  # left once, to negotiation
    ("sales_stage_conversion_ratio", "stage=negotiation"): 0,  # to lost
    ("sales_stage_dwell_seconds", "quantile=0.5,stage=proposal"): 4800,  # 120 -> 40 minutes
    ("sales_stage_dwell_seconds", "quantile=0.9,stage=proposal"): 4800,
    ("sales_stage_response_time_avg_seconds", "stage=proposal"): 4800,  # to negotiation
    ("sales_stage_response_time_avg_seconds", "stage=negotiation"): 600,  # to lost
    ("sales_deals_lost", "reason=timing,rep=m"): 1,  # the last reason given
    ("sales_win_ratio", "source=s_c"): 0,  # M1 lost (once), none won
}
EXPECTED_1H: dict[tuple[str, str], float] = {
    ("sales_deals_won", "rep=d1,source=s_a"): 1,  # D3: D1's second won event is no win
    ("sales_revenue_won", "rep=d1"): 5000,
    ("sales_new_customers", "rep=d1,source=s_a"): 1,
    ("sales_stage_entries", "stage=won"): 1,  # D3: D1's second won event is no entry
    ("sales_stage_entries", "stage=negotiation"): 1,
    ("sales_stage_entries", "stage=lost"): 1,
    ("sales_stage_conversion_ratio", "stage=proposal"): 1,  # M1's second proposal: no exit
    ("sales_stage_dwell_seconds", "quantile=0.5,stage=proposal"): 4800,
    ("sales_stage_response_time_avg_seconds", "stage=proposal"): 4800,
}
# 100 / no new customer; and no exit of won or lost (a second won or lost event made one)
ABSENT_TODAY = [
    ("sales_cost_per_new_customer", "source=s_b"),
    ("sales_stage_conversion_ratio", "stage=won"),
    ("sales_stage_conversion_ratio", "stage=lost"),
]
# in the last hour, M1's second proposal (55 minutes ago) is no entry into proposal
ABSENT_1H = [("sales_stage_entries", "stage=proposal")]
# live: the oldest waiting lead's age is 0 for o and p (contacted), none for x (owns none)
OLDEST_ZERO = ("o", "p")


def labels_of(text: str) -> dict[str, str]:
    """The labels of a key above (``k=v,...``)."""
    return dict(pair.split("=", 1) for pair in text.split(",")) if text else {}
