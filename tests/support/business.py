"""The business outcome scenario of issue 20, small enough to compute every value by hand.

``now`` is local noon (``noon_zone``): ``today`` began 12 h ago, ``7d`` holds the hours of
the six days before as well, ``1h`` the last hour only. Every KPI of the customers topic
has its expected value below, with the arithmetic in the comments.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

import orjson

from streamproc.config import Settings
from streamproc.contract.events import BusinessKind, EventKind
from streamproc.engine.engine import CUSTOMERS, Engine, RawMessage

Event = tuple[str, dict[str, Any]]  # (kind, event)
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
CUSTOMER_METRICS_PREFIXES = ("sales_cost", "sales_product", "sales_customer", "sales_churn")
CUSTOMER_METRICS = (
    "sales_revenue_churned",
    "sales_nps_responses",
    "sales_nps_score",
)


def is_customer_metric(name: str) -> bool:
    return name.startswith(CUSTOMER_METRICS_PREFIXES) or name in CUSTOMER_METRICS


class BusinessScenario:
    def __init__(self, now: float) -> None:
        self.now = float(int(now))
        self.events: list[Event] = []
        self._n = 0
        self._build()

    def at(self, minutes_ago: float) -> str:
        return datetime.fromtimestamp(self.now - minutes_ago * 60, UTC).isoformat()

    def add(self, kind: str, minutes_ago: float, **fields: Any) -> None:
        self._n += 1
        event = {"event_id": f"b-{self._n}", "occurred_at": self.at(minutes_ago)} | fields
        self.events.append((kind, event))

    def lead(self, ago: float, lead: str, source: str, **kw: Any) -> None:
        self.add("lead-created", ago, lead_id=lead, rep_id="r1", source=source, **kw)

    def won(self, ago: float, lead: str, rep: str, value: float, products: list[str]) -> None:
        lines = [{"product_id": p, "quantity": 1} for p in products] or None
        self.add(
            "stage-changed",
            ago,
            lead_id=lead,
            rep_id=rep,
            to_stage="won",
            deal_value=value,
            products=lines,
        )

    def _build(self) -> None:
        midnight = self.now - 12 * 3600  # local
        day = 86400
        # A churn that arrives before its customer's won deal (Y2, below): first in the list.
        self.add("customer-churned", 10, customer_id="CUST-Y2", reason="service")
        # Five smb customers won yesterday (20 h ago): active at today's start.
        for i in range(1, 6):
            lead = f"Y{i}"
            self.lead(21 * 60, lead, "webinar", customer_id=f"CUST-Y{i}", segment="smb")
            self.won(20 * 60, lead, "r2", 500, [])
        # Today: three won deals with overlapping products, three leads not won.
        self.lead(50, "G1", "google_ads", customer_id="CUST-A", segment="smb")
        self.lead(50, "G2", "google_ads", customer_id="CUST-B", segment="smb")
        self.lead(50, "G3", "google_ads")
        self.lead(50, "G4", "google_ads")
        self.lead(50, "R1", "referral", customer_id="CUST-C", segment="enterprise")
        self.lead(50, "R2", "referral")
        self.won(40, "G1", "r1", 1000, ["crm", "voip"])
        self.won(35, "G2", "r1", 2000, ["support", "crm", "voip"])
        self.won(30, "R1", "r2", 5000, ["crm", "support"])
        # Two of the five churn today: 2 / 5.
        self.add("customer-churned", 10, customer_id="CUST-Y1", reason="price", revenue_lost=300)
        # Costs: a 31-day google_ads invoice (100 a day) from ten days before today's start;
        # referral's 50 half an hour ago; a service cost of customer A (smb); an enterprise
        # sales cost without a customer.
        self.add(
            "cost-recorded",
            12 * 60,
            amount=3100,
            category="marketing",
            source="google_ads",
            period_start=_iso(midnight - 10 * day),
            period_end=_iso(midnight + 21 * day),
        )
        self.add("cost-recorded", 30, amount=50, category="marketing", source="referral")
        self.add("cost-recorded", 20, amount=40, category="service", customer_id="CUST-A")
        self.add("cost-recorded", 20, amount=25, category="sales", segment="enterprise")
        # Ten NPS answers: promoters 10 9 9 10 9, passives 7 8 7, detractors 3 2: 50 - 20 = 30.
        for customer, score, rep in (
            ("CUST-A", 10, None),
            ("CUST-A", 9, None),
            ("CUST-A", 7, None),
            ("CUST-B", 9, None),
            ("CUST-B", 8, None),
            ("CUST-B", 3, None),
            ("CUST-C", 10, None),
            ("CUST-C", 9, None),
            ("CUST-C", 7, "r3"),
            ("CUST-C", 2, None),
        ):
            fields = {"customer_id": customer, "score": score}
            self.add("nps-responded", 5, **fields | ({"rep_id": rep} if rep else {}))
        # An answer from a customer never won: kept, counted nowhere.
        self.add("nps-responded", 5, customer_id="CUST-Z", score=0)

    # --- the truth -----------------------------------------------------------------------

    def expected(self) -> dict[SeriesKey, float]:
        e: dict[SeriesKey, float] = {}

        def put(name: str, value: float, **labels: str) -> None:
            e[(name, tuple(sorted(labels.items())))] = round(value, 6)

        for w in ("1h", "today", "7d"):
            week = w == "7d"
            # created: google_ads 4, referral 2 (+ webinar 5 yesterday in 7d)
            # google_ads invoice: one share of 100 at each midnight: today 1, 7d 7, 1h none
            google = {"1h": 0, "today": 100, "7d": 700}[w]
            if google:
                put("sales_cost", google, window=w, category="marketing", source="google_ads")
                put("sales_cost_per_lead", google / 4, window=w, source="google_ads")
                put("sales_cost_per_new_customer", google / 2, window=w, source="google_ads")
            put("sales_cost", 50, window=w, category="marketing", source="referral")
            put("sales_cost", 40, window=w, category="service", source="none")
            put("sales_cost", 25, window=w, category="sales", source="none")
            put("sales_cost_per_lead", 50 / 2, window=w, source="referral")
            put("sales_cost_per_new_customer", 50 / 1, window=w, source="referral")
            leads = 11 if week else 6
            new = 8 if week else 3
            put("sales_cost_per_lead", (google + 50) / leads, window=w)
            put("sales_cost_per_new_customer", (google + 50) / new, window=w)
            # products: crm in G1 G2 R1, voip G1 G2, support G2 R1
            put("sales_product_wins", 3, window=w, product="crm")
            put("sales_product_wins", 2, window=w, product="voip")
            put("sales_product_wins", 2, window=w, product="support")
            put("sales_product_pair_wins", 2, window=w, product_a="crm", product_b="voip")
            put("sales_product_pair_wins", 2, window=w, product_a="crm", product_b="support")
            put("sales_product_pair_wins", 1, window=w, product_a="support", product_b="voip")
            for a, b, ratio in (
                ("crm", "voip", 2 / 3),
                ("crm", "support", 2 / 3),
                ("voip", "crm", 1.0),
                ("voip", "support", 1 / 2),
                ("support", "crm", 1.0),
                ("support", "voip", 1 / 2),
            ):
                put("sales_product_attach_ratio", ratio, window=w, product_a=a, product_b=b)
            # churn: Y1 (price, 300 lost) and Y2 (service), smb
            put("sales_customers_churned", 1, window=w, segment="smb", reason="price")
            put("sales_customers_churned", 1, window=w, segment="smb", reason="service")
            put("sales_revenue_churned", 300, window=w, segment="smb")
            if w == "today":
                # active now 5 (Y3 Y4 Y5 A B) - won today 2 (A B) + churned today 2 = 5
                put("sales_churn_ratio", 2 / 5, window=w, segment="smb")
            elif w == "1h":
                # active now 5 - won in the hour 2 + churned 2 = 5 as well
                put("sales_churn_ratio", 2 / 5, window=w, segment="smb")
                # enterprise: C active now, won in the hour: 0 at the start, no ratio
            # 7d: every customer was won inside the window: none active at its start
            smb_revenue = 3000 + (2500 if week else 0)  # A 1000 + B 2000 (+ Y1-Y5 500 each)
            put("sales_customer_revenue", smb_revenue, window=w, segment="smb")
            put("sales_customer_revenue", 5000, window=w, segment="enterprise")
            put("sales_customer_cost", 40, window=w, segment="smb")  # A's service cost
            put("sales_customer_cost", 25, window=w, segment="enterprise")
            put("sales_customer_profit", smb_revenue - 40, window=w, segment="smb")
            put("sales_customer_profit", 5000 - 25, window=w, segment="enterprise")
            put("sales_nps_responses", 5, window=w, category="promoter")
            put("sales_nps_responses", 3, window=w, category="passive")
            put("sales_nps_responses", 2, window=w, category="detractor")
            put("sales_nps_score", 30, window=w)
            put("sales_nps_score", 100 * (3 - 1) / 6, window=w, rep="r1")  # A, B: owner r1
            put("sales_nps_score", 100 * (2 - 1) / 3, window=w, rep="r2")  # C but its 7
            put("sales_nps_score", 0, window=w, rep="r3")  # C's 7, about r3
        put("sales_customers_active", 5, segment="smb")
        put("sales_customers_active", 1, segment="enterprise")
        return e

    def settings_overrides(self) -> dict[str, Any]:
        return {}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def key_of(kind: str, event: dict[str, Any]) -> bytes:
    if kind in {k.value for k in EventKind}:
        return str(event["lead_id"]).encode()
    if "customer_id" in event:
        return str(event["customer_id"]).encode()
    return str(event["event_id"]).encode()


def kind_of(kind: str) -> EventKind | BusinessKind:
    return EventKind(kind) if kind in {k.value for k in EventKind} else BusinessKind(kind)


class EngineRun:
    """One engine fed like a worker: the messages it forwards come back to it on the
    internal customers topic (partition by key, as a producer would), in later batches."""

    def __init__(self, settings: Settings, partitions: int = 3) -> None:
        self.settings = settings
        self.engine = Engine(settings, {})
        self.partitions = partitions
        self.offset = 0

    def raw(self, kind: str, event: dict[str, Any], partition: int | None = None) -> RawMessage:
        key = key_of(kind, event)
        self.offset += 1
        part = zlib.crc32(key) % self.partitions if partition is None else partition
        return RawMessage(
            kind_of(kind),
            self.settings.topic(kind),
            part,
            self.offset,
            key,
            orjson.dumps(event),
            None,
        )

    def feed(self, messages: list[RawMessage], now: float, batch: int = 1000) -> None:
        pending = list(messages)
        while pending:
            chunk, pending = pending[:batch], pending[batch:]
            result = self.engine.process(chunk, now)
            for key, value in result.forward:
                self.offset += 1
                part = zlib.crc32(key.encode()) % self.partitions
                pending.append(
                    RawMessage(
                        CUSTOMERS,
                        self.settings.topic("internal.customers"),
                        part,
                        self.offset,
                        key.encode(),
                        value,
                        None,
                    )
                )
