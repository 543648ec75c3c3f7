"""Business outcomes for the simulated team (spec/business-events.md): customer segments,
product bundles on won deals, NPS answers after them, churn, and monthly ad invoices.

Drawn from a stream of their own per lead (seeded by its id), so that switching outcomes on
changes none of the lead events the other draws make.
"""

from __future__ import annotations

import math
import random
import zlib
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CHURN_MONTHLY",
    "COST_RECORDED",
    "CUSTOMER_CHURNED",
    "NPS_RESPONDED",
    "OUTCOME_KINDS",
    "PRODUCTS",
    "SEGMENTS",
    "LeadOutcomes",
    "monthly_invoices",
]

COST_RECORDED = "cost-recorded"
CUSTOMER_CHURNED = "customer-churned"
NPS_RESPONDED = "nps-responded"
OUTCOME_KINDS = (COST_RECORDED, CUSTOMER_CHURNED, NPS_RESPONDED)

DAY = 86400.0
MONTH = 30 * DAY
SEGMENTS = (("smb", 0.6), ("mid_market", 0.3), ("enterprise", 0.1))
# product -> chance it is in a won deal, by segment (smb, mid_market, enterprise); support
# and analytics sell together, onboarding with the bigger deals
PRODUCTS: dict[str, tuple[float, float, float]] = {
    "crm": (0.95, 0.95, 0.98),
    "voip": (0.45, 0.40, 0.30),
    "support": (0.20, 0.45, 0.80),
    "analytics": (0.05, 0.20, 0.50),
    "onboarding": (0.15, 0.50, 0.85),
}
NPS_SHARE = 0.6  # of won deals, the share whose customer answers the survey
NPS_AFTER = 5 * DAY  # median wait from the win to the answer (pipeline time)
CHURN_MONTHLY = 0.03  # a few percent of the customers leave each month
CHURN_HORIZON = 3 * MONTH  # churns drawn this far after the win (pipeline time) at most
CHURN_REASONS = (("price", 0.35), ("service", 0.25), ("competitor", 0.25), ("no_use", 0.15))
EXISTING_POOL = 400  # existing customers are drawn from this many accounts
# monthly marketing spend per paid source, per lead it brings at the demo's rate
SPEND_PER_LEAD = {
    "google_ads": 55.0,
    "facebook": 30.0,
    "linkedin": 90.0,
    "webinar": 40.0,
    "trade_show": 180.0,
}


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    x = rng.random() * sum(w for _, w in weighted)
    for name, weight in weighted:
        x -= weight
        if x < 0:
            return name
    return weighted[-1][0]


class LeadOutcomes:
    """What a lead means for its customer: drawn from its id, the same on every call."""

    __slots__ = ("customer_id", "rng", "segment")

    def __init__(self, lead_id: str, existing: bool) -> None:
        self.rng = random.Random(zlib.crc32(lead_id.encode()))
        self.segment = _pick(self.rng, SEGMENTS)
        self.customer_id = f"cust-{self.rng.randrange(EXISTING_POOL):04d}" if existing else lead_id

    def created_fields(self, existing: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {"segment": self.segment}
        if existing:
            fields["customer_id"] = self.customer_id
        return fields

    def products(self) -> list[dict[str, Any]]:
        i = [name for name, _ in SEGMENTS].index(self.segment)
        lines = []
        for product, chances in PRODUCTS.items():
            if self.rng.random() < chances[i]:
                line: dict[str, Any] = {"product_id": product}
                if product == "crm" and i > 0:
                    line["quantity"] = self.rng.randint(5, 200)
                lines.append(line)
        return lines or [{"product_id": "crm"}]

    def after_win(
        self, won: float, close_skill: float, pace: float
    ) -> list[tuple[float, str, dict[str, Any]]]:
        """The customer's NPS answer (scores rise with the rep's skill) and churn, if any."""
        rng, out = self.rng, []
        if rng.random() < NPS_SHARE:
            wait = NPS_AFTER / pace * math.exp(0.5 * rng.gauss(0, 1))
            mean = 7.6 + 3.0 * (close_skill - 1.0)
            score = max(0, min(10, round(rng.gauss(mean, 1.8))))
            out.append(
                (won + wait, NPS_RESPONDED, {"customer_id": self.customer_id, "score": score})
            )
        # exponential lifetime at CHURN_MONTHLY a month, kept when within the horizon
        lifetime = rng.expovariate(-math.log(1 - CHURN_MONTHLY) / MONTH)
        if lifetime < CHURN_HORIZON:
            churn: dict[str, Any] = {
                "customer_id": self.customer_id,
                "reason": _pick(rng, CHURN_REASONS),
            }
            if rng.random() < 0.7:
                churn["revenue_lost"] = round(rng.uniform(500, 20_000), -1)
            out.append((won + lifetime / pace, CUSTOMER_CHURNED, churn))
        return out


def _month_start(ts: float, back: int) -> datetime:
    d = datetime.fromtimestamp(ts, UTC)
    index = d.year * 12 + d.month - 1 - back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def monthly_invoices(
    now: float, leads_per_day: dict[str, float], seed: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """The ad invoices of last month and this month, one per paid source, recorded now and
    spread over their month (UTC months), sized by the leads the source brings; and a
    month of sales tools and customer service."""
    rng = random.Random(seed)
    events: list[tuple[str, dict[str, Any]]] = []
    for back in (1, 0):
        start, end = _month_start(now, back), _month_start(now, back - 1)
        days = (end - start).total_seconds() / DAY
        month = start.strftime("%Y-%m")
        period = {"period_start": start.isoformat(), "period_end": end.isoformat()}
        for source, per_lead in SPEND_PER_LEAD.items():
            leads = leads_per_day.get(source, 0.0) * days
            amount = round(per_lead * leads * rng.uniform(0.85, 1.15), 2)
            if amount > 0:
                cost = {"amount": amount, "category": "marketing", "source": source}
                events.append((f"invoice-{month}-{source}-{seed}", cost | period))
        for category, segment, amount in (
            ("sales", None, 4_000.0),
            ("service", "enterprise", 6_000.0),
        ):
            cost = {"amount": amount, "category": category} | period
            if segment:
                cost["segment"] = segment
            events.append((f"invoice-{month}-{category}-{seed}", cost))
    stamp = datetime.fromtimestamp(now, UTC).isoformat()
    return [
        (COST_RECORDED, {"event_id": event_id, "occurred_at": stamp} | fields)
        for event_id, fields in events
    ]
