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
from streamproc.engine.engine import Engine, RawMessage
from streamproc.engine.windows import WindowBounds, WindowClock
from tests.support.truth import key_of, kind_of, process_all

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
    def __init__(self, now: float, clock: WindowClock) -> None:
        self.now = float(int(now))
        self.clock = clock
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
        today = self.clock.day(self.now)
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
        # Costs: a 31-day google_ads invoice (100 a day) from ten days before today began;
        # referral's 50 half an hour ago; a service cost of customer A (smb); an enterprise
        # sales cost without a customer.
        self.add(
            "cost-recorded",
            12 * 60,
            amount=3100,
            category="marketing",
            source="google_ads",
            period_start=_iso(self.clock.midnight(today - 10)),
            period_end=_iso(self.clock.midnight(today + 21)),
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
        """Every series, window by window: which of the scenario's instants each window
        holds decides (a window is ``[start, end)``; the periods end at the period's end,
        and a share counts once its day has begun: the current month holds the invoice's
        shares up to today's, not those of its days still to come)."""
        e: dict[SeriesKey, float] = {}

        def put(name: str, value: float, **labels: str) -> None:
            e[(name, tuple(sorted(labels.items())))] = round(value, 6)

        clock = self.clock
        now, minute, hour = self.now, 60.0, 3600.0
        today = clock.day(now)
        # the invoice: 100 at each of its 31 local midnights, from 10 days before today's
        invoice = [clock.midnight(today - 10 + k) for k in range(31)]
        # a current period holds its local days up to today's: the days to come in none yet
        invoice = [t for t in invoice if clock.day(t) <= today]
        windows = {b.name: b for b in clock.all_bounds(now)}
        for w, b in windows.items():

            def n(*instants: float, b: WindowBounds = b) -> int:
                return sum(1 for t in instants if b.start <= t < b.end)

            def since(*instants: float, b: WindowBounds = b) -> int:  # the start to now
                return sum(1 for t in instants if b.start <= t <= now)

            today_won = (now - 40 * minute, now - 35 * minute, now - 30 * minute)
            g1, g2, r1 = (n(t) for t in today_won)
            yesterday = n(now - 20 * hour)  # the five Y deals, at one instant
            google = 100.0 * n(*invoice)
            referral = 50.0 * n(now - 30 * minute)
            created = {
                "google_ads": 4 * n(now - 50 * minute),
                "referral": 2 * n(now - 50 * minute),
                "webinar": 5 * n(now - 21 * hour),
            }
            new = {"google_ads": g1 + g2, "referral": r1, "webinar": 5 * yesterday}
            marketing = {"google_ads": google, "referral": referral, "webinar": 0.0}
            for source, spent in marketing.items():
                if spent:
                    put("sales_cost", spent, window=w, category="marketing", source=source)
                if not (google or referral):
                    continue  # no marketing cost in the window: no cost per anything
                # a source nothing was spent on (webinar here) costs 0 a lead
                if created[source]:
                    put("sales_cost_per_lead", spent / created[source], window=w, source=source)
                if new[source]:
                    put("sales_cost_per_new_customer", spent / new[source], window=w, source=source)
            if google or referral:
                if sum(created.values()):
                    put(
                        "sales_cost_per_lead", (google + referral) / sum(created.values()), window=w
                    )
                if sum(new.values()):
                    put(
                        "sales_cost_per_new_customer",
                        (google + referral) / sum(new.values()),
                        window=w,
                    )
            at20 = n(now - 20 * minute)  # A's service cost, the enterprise sales cost
            if at20:
                put("sales_cost", 40, window=w, category="service", source="none")
                put("sales_cost", 25, window=w, category="sales", source="none")
            # products: G1 crm voip, G2 crm support voip, R1 crm support
            wins = {"crm": g1 + g2 + r1, "voip": g1 + g2, "support": g2 + r1}
            for product, count in wins.items():
                if count:
                    put("sales_product_wins", count, window=w, product=product)
            pairs = {("crm", "voip"): g1 + g2, ("crm", "support"): g2 + r1, ("support", "voip"): g2}
            for (a, b_), count in pairs.items():
                if count:
                    put("sales_product_pair_wins", count, window=w, product_a=a, product_b=b_)
                    put("sales_product_attach_ratio", count / wins[a], window=w, product_a=a,
                        product_b=b_)  # fmt: skip
                    put("sales_product_attach_ratio", count / wins[b_], window=w, product_a=b_,
                        product_b=a)  # fmt: skip
            # churn: Y1 (price, 300 lost) and Y2 (service), smb, 10 minutes ago
            churned = n(now - 10 * minute)
            if churned:
                put("sales_customers_churned", 1, window=w, segment="smb", reason="price")
                put("sales_customers_churned", 1, window=w, segment="smb", reason="service")
                put("sales_revenue_churned", 300, window=w, segment="smb")
            # active at the start: active now, less those won since, plus those lost since
            smb_won = (now - 20 * hour,) * 5 + (now - 40 * minute, now - 35 * minute)
            lost_since = 2 * since(now - 10 * minute)
            for segment, active, won_at, lost in (
                ("smb", 5, smb_won, 2 * churned),
                ("enterprise", 1, (now - 30 * minute,), 0),
            ):
                at_start = active - since(*won_at) + (lost_since if segment == "smb" else 0)
                if at_start > 0:
                    put("sales_churn_ratio", lost / at_start, window=w, segment=segment)
            smb_revenue = 1000.0 * g1 + 2000 * g2 + 2500 * yesterday
            for segment, revenue, cost in (
                ("smb", smb_revenue, 40.0 * at20),
                ("enterprise", 5000.0 * r1, 25.0 * at20),
            ):
                if revenue:
                    put("sales_customer_revenue", revenue, window=w, segment=segment)
                if cost:
                    put("sales_customer_cost", cost, window=w, segment=segment)
                if revenue or cost:
                    put("sales_customer_profit", revenue - cost, window=w, segment=segment)
            if n(now - 5 * minute):  # the ten answers
                put("sales_nps_responses", 5, window=w, category="promoter")
                put("sales_nps_responses", 3, window=w, category="passive")
                put("sales_nps_responses", 2, window=w, category="detractor")
                put("sales_nps_score", 30, window=w)  # 50 % - 20 %
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
        process_all(self.engine, messages, now, batch, self.partitions)
