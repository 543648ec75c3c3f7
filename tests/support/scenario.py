"""A sales day small enough to compute every KPI of the catalogue by hand.

Times are minutes before "now" (the moment the scenario is built). The time zone is chosen
so that local time is around noon: the last hour is then inside ``today`` and an event of
30 hours ago is yesterday, whatever the hour the test runs at.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson

Event = tuple[str, dict[str, Any]]


def noon_zone(now: float) -> str:
    """An Etc/GMT zone in which ``now`` is between 11:00 and 13:00 local time."""
    hour = datetime.fromtimestamp(now, UTC).hour
    offset = 12 - hour  # local = utc + offset; Etc/GMT signs are inverted
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


class Scenario:
    def __init__(self, now: float | None = None) -> None:
        # Whole seconds: every duration below is then exact (300 s is within a 300 s SLA).
        self.now = float(int(now or time.time()))
        self.events: list[Event] = []
        self._n = 0
        self._build()

    def at(self, minutes_ago: float) -> str:
        return datetime.fromtimestamp(self.now - minutes_ago * 60, UTC).isoformat()

    def add(self, kind: str, minutes_ago: float, lead: str, **fields: Any) -> None:
        self._n += 1
        event = {"event_id": f"ev-{self._n}", "occurred_at": self.at(minutes_ago), "lead_id": lead}
        event.update(fields)
        self.events.append((kind, event))

    def created(self, ago: float, lead: str, rep: str, source: str, **kw: Any) -> None:
        self.add("lead-created", ago, lead, rep_id=rep, source=source, **kw)

    def attempt(
        self, ago: float, lead: str, rep: str, channel: str, connected: bool, **kw: Any
    ) -> None:
        self.add(
            "contact-attempted", ago, lead, rep_id=rep, channel=channel, connected=connected, **kw
        )

    def stage(self, ago: float, lead: str, rep: str, to: str, **kw: Any) -> None:
        self.add("stage-changed", ago, lead, rep_id=rep, from_stage=None, to_stage=to, **kw)

    def _build(self) -> None:
        self.created(50, "L1", "r1", "referral", estimated_value=10000)
        self.attempt(48, "L1", "r1", "call", True)
        self.stage(47, "L1", "r1", "contacted")
        self.stage(40, "L1", "r1", "qualified")
        self.stage(30, "L1", "r1", "proposal", deal_value=27600, win_probability=0.12)

        self.created(45, "L2", "r1", "webinar", existing_customer=True)
        self.attempt(35, "L2", "r1", "email", False, message_id="m2")
        self.add("email-opened", 30, "L2", message_id="m2", clicked=True)
        self.stage(20, "L2", "r1", "negotiation", deal_value=34500, win_probability=0.83)

        self.created(40, "L3", "r2", "facebook")
        self.attempt(39, "L3", "r2", "call", False)
        self.attempt(38, "L3", "r2", "call", True)
        self.stage(37, "L3", "r2", "qualified")
        self.stage(10, "L3", "r2", "won", deal_value=5000)

        self.created(30, "L4", "r2", "referral", existing_customer=True)
        self.attempt(28, "L4", "r2", "sms", True)
        self.stage(25, "L4", "r2", "proposal", deal_value=8000)
        self.stage(5, "L4", "r2", "won")

        self.created(20, "L5", "r1", "facebook")
        self.attempt(15, "L5", "r1", "call", False)
        self.stage(14, "L5", "r1", "qualified")
        self.stage(12, "L5", "r1", "lost", lost_reason="price")

        self.created(8, "L6", "r2", "webinar")  # waiting, past the 300 s SLA
        self.created(265 / 60, "L7", "r1", "referral")  # waiting, at risk (> 240 s)

        self.created(15, "L8", "r2", "google_ads")
        self.attempt(14, "L8", "r2", "email", False, message_id="m8")
        self.add("email-opened", 13, "L8", message_id="m8", clicked=False)

        self.created(30 * 60, "L9", "r1", "referral")  # yesterday: 7d only
        self.attempt(29 * 60, "L9", "r1", "call", True)

        self.created(8 * 24 * 60, "L10", "r3", "referral")  # older than 7 days: periods only
        self.stage(8 * 24 * 60 - 1, "L10", "r3", "proposal", deal_value=1000)

    def messages(self, prefix: str, seed: int = 7) -> list[tuple[str, bytes, bytes]]:
        """(topic, key, value): scrambled, with every fifth event sent twice."""
        rng = random.Random(seed)
        out = [
            (prefix + kind, ev["lead_id"].encode(), orjson.dumps(ev)) for kind, ev in self.events
        ]
        out += out[::5]
        rng.shuffle(out)
        return out

    # --- the truth, computed by hand (see the comments for the arithmetic) -----------------

    LATE = 0  # L10's two events are 8 days old: past 7d, in the calendar periods, not late
    VALID = 35


def expected(window_labels: bool = True) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every series of the catalogue the scenario produces, by hand. Key: name, sorted labels."""
    e: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def put(name: str, value: float, **labels: str) -> None:
        e[(name, tuple(sorted(labels.items())))] = value

    for w in ("1h", "today", "7d"):
        extra = 1 if w == "7d" else 0  # L9, 30 h ago
        put("sales_leads_created", 2 + extra, window=w, rep="r1", source="referral")  # L1 L7 (+L9)
        put("sales_leads_created", 1, window=w, rep="r1", source="webinar")  # L2
        put("sales_leads_created", 1, window=w, rep="r2", source="facebook")  # L3
        put("sales_leads_created", 1, window=w, rep="r2", source="referral")  # L4
        put("sales_leads_created", 1, window=w, rep="r1", source="facebook")  # L5
        put("sales_leads_created", 1, window=w, rep="r2", source="webinar")  # L6
        put("sales_leads_created", 1, window=w, rep="r2", source="google_ads")  # L8
        put("sales_first_contacts", 3 + extra, window=w, rep="r1")  # L1 L2 L5 (+L9)
        put("sales_first_contacts", 3, window=w, rep="r2")  # L3 L4 L8
        put("sales_contact_attempts", 2 + extra, window=w, rep="r1", channel="call")  # L1 L5 (+L9)
        put("sales_contact_attempts", 1, window=w, rep="r1", channel="email")  # L2
        put("sales_contact_attempts", 2, window=w, rep="r2", channel="call")  # L3 x2
        put("sales_contact_attempts", 1, window=w, rep="r2", channel="sms")  # L4
        put("sales_contact_attempts", 1, window=w, rep="r2", channel="email")  # L8
        put("sales_contact_connects", 1 + extra, window=w, rep="r1", channel="call")  # L1 (+L9)
        put("sales_contact_connects", 1, window=w, rep="r2", channel="call")  # L3
        put("sales_contact_connects", 1, window=w, rep="r2", channel="sms")  # L4
        put("sales_connect_ratio", (1 + extra) / (2 + extra), window=w, rep="r1", channel="call")
        put("sales_connect_ratio", 0.0, window=w, rep="r1", channel="email")
        put("sales_connect_ratio", 0.5, window=w, rep="r2", channel="call")
        put("sales_connect_ratio", 1.0, window=w, rep="r2", channel="sms")
        put("sales_connect_ratio", 0.0, window=w, rep="r2", channel="email")
        # r2 responses: L3 60, L4 120, L8 60 -> [60, 60, 120]
        put("sales_response_time_seconds", 60.0, window=w, rep="r2", quantile="0.5")
        put("sales_response_time_seconds", 108.0, window=w, rep="r2", quantile="0.9")
        put("sales_response_time_avg_seconds", 80.0, window=w, rep="r2")
        put("sales_responded_within_sla_ratio", 1.0, window=w, rep="r2")
        if w == "7d":  # r1: [120, 300, 600, 3600]
            put("sales_response_time_seconds", 450.0, window=w, rep="r1", quantile="0.5")
            put("sales_response_time_seconds", 2700.0, window=w, rep="r1", quantile="0.9")
            put("sales_response_time_avg_seconds", 1155.0, window=w, rep="r1")
            put("sales_responded_within_sla_ratio", 0.5, window=w, rep="r1")
        else:  # r1: L1 120, L2 600, L5 300 -> [120, 300, 600]
            put("sales_response_time_seconds", 300.0, window=w, rep="r1", quantile="0.5")
            put("sales_response_time_seconds", 540.0, window=w, rep="r1", quantile="0.9")
            put("sales_response_time_avg_seconds", 340.0, window=w, rep="r1")
            put("sales_responded_within_sla_ratio", round(2 / 3, 6), window=w, rep="r1")
        for stage, n in (
            ("contacted", 1),
            ("qualified", 3),
            ("proposal", 2),
            ("negotiation", 1),
            ("won", 2),
            ("lost", 1),
        ):
            put("sales_stage_entries", n, window=w, stage=stage)
        # exits: contacted 420 fwd; qualified L1 600 fwd, L3 1620 fwd, L5 120 lost;
        # proposal 1200 fwd
        put("sales_stage_conversion_ratio", 1.0, window=w, stage="contacted")
        put("sales_stage_conversion_ratio", round(2 / 3, 6), window=w, stage="qualified")
        put("sales_stage_conversion_ratio", 1.0, window=w, stage="proposal")
        for q, c, qu, p in (("0.5", 420.0, 600.0, 1200.0), ("0.9", 420.0, 1416.0, 1200.0)):
            put("sales_stage_dwell_seconds", c, window=w, stage="contacted", quantile=q)
            put("sales_stage_dwell_seconds", qu, window=w, stage="qualified", quantile=q)
            put("sales_stage_dwell_seconds", p, window=w, stage="proposal", quantile=q)
        put("sales_deals_won", 1, window=w, rep="r2", source="facebook")  # L3
        put("sales_deals_won", 1, window=w, rep="r2", source="referral")  # L4
        put("sales_revenue_won", 13000.0, window=w, rep="r2")  # 5000 + 8000
        # no segment given: both in "default"; no cost recorded: profit is the revenue
        put("sales_customer_revenue", 13000.0, window=w, segment="default")
        put("sales_customer_profit", 13000.0, window=w, segment="default")
        put("sales_deals_lost", 1, window=w, rep="r1", reason="price")  # L5
        put("sales_win_ratio", 0.5, window=w, source="facebook")  # L3 won, L5 lost
        put("sales_win_ratio", 1.0, window=w, source="referral")  # L4 won
        put("sales_rep_win_ratio", 1.0, window=w, rep="r2")  # L3, L4 won
        put("sales_rep_win_ratio", 0.0, window=w, rep="r1")  # L5 lost
        put("sales_new_customers", 1, window=w, rep="r2", source="facebook")  # L3 (L4 existing)
        # first connected attempt: L3 call (won), L4 sms (won), L5 never (lost)
        put("sales_channel_win_ratio", 1.0, window=w, channel="call")
        put("sales_channel_win_ratio", 1.0, window=w, channel="sms")
        put("sales_channel_win_ratio", 0.0, window=w, channel="none")
        # entry of an open stage to the next attempt or move: contacted L1 47->40 420 s;
        # qualified L1 40->30 600, L3 37->10 1620, L5 14->12 120; proposal L4 25->5 1200
        # (L1's proposal, L2's negotiation and L10's proposal: no activity since)
        for q, c, qu, p in (("0.5", 420.0, 600.0, 1200.0), ("0.9", 420.0, 1416.0, 1200.0)):
            put("sales_stage_response_time_seconds", c, window=w, stage="contacted", quantile=q)
            put("sales_stage_response_time_seconds", qu, window=w, stage="qualified", quantile=q)
            put("sales_stage_response_time_seconds", p, window=w, stage="proposal", quantile=q)
        put("sales_stage_response_time_avg_seconds", 420.0, window=w, stage="contacted")
        put("sales_stage_response_time_avg_seconds", 780.0, window=w, stage="qualified")
        put("sales_stage_response_time_avg_seconds", 1200.0, window=w, stage="proposal")
        put("sales_revenue_per_rep", 6500.0, window=w)  # 13000 / {r1, r2}
        put("sales_upsell_ratio", 0.5, window=w)  # L4 of L3, L4
        put("sales_emails_sent", 1, window=w, rep="r1")
        put("sales_emails_opened", 1, window=w, rep="r1")
        put("sales_emails_clicked", 1, window=w, rep="r1")
        put("sales_emails_sent", 1, window=w, rep="r2")
        put("sales_emails_opened", 1, window=w, rep="r2")
        put("sales_email_open_ratio", 1.0, window=w, rep="r1")
        put("sales_email_click_ratio", 1.0, window=w, rep="r1")
        put("sales_email_open_ratio", 1.0, window=w, rep="r2")
        put("sales_email_click_ratio", 0.0, window=w, rep="r2")
    put("sales_customers_active", 2, segment="default")  # L3 and L4: won, new customers
    put("sales_leads_awaiting_contact", 1, rep="r2", source="webinar")  # L6
    put("sales_leads_awaiting_contact", 1, rep="r1", source="referral")  # L7
    put("sales_leads_awaiting_contact", 1, rep="r3", source="referral")  # L10, 8 days
    put("sales_leads_awaiting_contact_at_risk", 1, rep="r1")
    put("sales_leads_awaiting_contact_at_risk", 0, rep="r2")
    put("sales_leads_awaiting_contact_at_risk", 0, rep="r3")
    put("sales_leads_awaiting_contact_over_sla", 0, rep="r1")
    put("sales_leads_awaiting_contact_over_sla", 1, rep="r2")
    put("sales_leads_awaiting_contact_over_sla", 1, rep="r3")
    put("sales_open_pipeline_value", 27600.0, rep="r1", stage="proposal")  # L1
    put("sales_open_pipeline_value", 34500.0, rep="r1", stage="negotiation")  # L2
    put("sales_open_pipeline_value", 1000.0, rep="r3", stage="proposal")  # L10
    put("sales_forecast_value", 31947.0, rep="r1")  # 27600 x 0.12 + 34500 x 0.83
    put("sales_forecast_value", 500.0, rep="r3")  # 1000 x 0.50 (proposal's default)
    put("sales_activity_target_ratio", 0.3, rep="r1")  # 3 attempts today / target 10
    # STREAMPROC_ACTIVITY_TARGETS {"r1": 10}: the default daily contact_attempts target
    put("sales_target", 10.0, measure="contact_attempts", period="day", rep="r1")
    put("sales_target_attainment_ratio", 0.3, measure="contact_attempts", period="day", rep="r1")
    return e


OLDEST = {"r1": 265.0, "r2": 480.0, "r3": 8 * 86400.0}  # seconds at build time
