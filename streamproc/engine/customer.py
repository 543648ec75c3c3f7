"""Customers: accounts that outlive their leads, keyed by ``customer_id``.

A customer's state is plain data (dicts and lists, JSON on its changelog): the won deals of
its leads, each as its lead last reported it (``Deal``, replaced by a higher ``version``),
and its own events (churns, NPS answers and costs), deduplicated by ``event_id``. As for a
lead, everything the KPIs read is a pure function of that state (``CustomerFacts``), so the
engine retracts a customer's old facts and adds its new ones whenever it changes: the same
events and deals in any order, repeated, or replayed after a crash give the same numbers.

The won deals come from the leads' partitions (the engine repartitions them through the
internal customers topic, keyed by customer); the business events from their own topics,
repartitioned the same way. A cost without a ``customer_id`` is an entity of its own,
keyed ``cost:<event_id>``: its state is just its event.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from streamproc.contract.events import CostRecorded, CustomerChurned, NpsResponded
from streamproc.engine.facts import Fact
from streamproc.engine.lead import LeadState
from streamproc.engine.windows import WindowClock
from streamproc.instants import representable

__all__ = [
    "NO_SOURCE",
    "CustomerFacts",
    "CustomerState",
    "Deal",
    "cost_key",
    "deal_of",
    "event_row",
    "nps_category",
]

NO_SOURCE = "none"  # the source label of a cost that bought no particular source
COST_PREFIX = "cost:"


class Deal(NamedTuple):
    """What a lead tells its customer: its won deal (``won`` None: not won, or no more)."""

    lead_id: str
    version: int  # the lead's event count: a lead's report with more events is newer
    won: float | None  # event time of the first won move
    value: float
    segment: str
    rep: str  # the rep who won it
    source: str  # the lead's source (kept in the format; no customer fact reads it now)


def deal_of(lead: LeadState, won_stage: str, value: float) -> tuple[str, Deal]:
    """The lead's customer and its deal as of now (``value``: the deal value the facts use)."""
    creation = lead.creation
    customer = (creation.customer if creation is not None else None) or lead.lead_id
    segment = creation.segment if creation is not None else "default"
    wins = sorted(move for move in lead.stages if move.to_stage == won_stage)
    version = sum(len(group) for group in (lead.created, lead.attempts, lead.stages, lead.opens))
    won = wins[0] if wins else None
    return customer, Deal(
        lead.lead_id,
        version,
        None if won is None else won.ts,
        value if won is not None else 0.0,
        segment,
        won.rep if won is not None else lead.owner,
        lead.source,
    )


def cost_key(event: CostRecorded) -> str:
    """The entity a cost belongs to: its customer, else itself."""
    return event.customer_id or COST_PREFIX + event.event_id


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def event_row(event: CostRecorded | CustomerChurned | NpsResponded) -> list[Any]:
    """The compact, JSON-ready record a customer keeps of one of its events."""
    if isinstance(event, CustomerChurned):
        return ["churn", event.ts, event.reason or "unknown", event.revenue_lost]
    if isinstance(event, NpsResponded):
        return ["nps", event.ts, event.score, event.rep_id]
    return [
        "cost",
        event.ts,
        event.amount,
        event.category,
        event.source or NO_SOURCE,
        event.segment,
        _epoch(event.period_start),
        _epoch(event.period_end),
    ]


def nps_category(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def _row_end(row: list[Any]) -> float:
    """The event time up to which an event row's facts land (a cost's period end)."""
    return float(row[7] if row[0] == "cost" and row[7] is not None else row[1])


class CustomerState:
    """The deals and events of one customer (or of one cost without a customer)."""

    __slots__ = ("changed_at", "customer_id", "deals", "events", "last_ts", "oldest", "partition")

    def __init__(self, customer_id: str, partition: int) -> None:
        self.customer_id = customer_id
        self.partition = partition
        self.deals: dict[str, Deal] = {}
        self.events: dict[str, list[Any]] = {}  # event_id -> event_row
        self.last_ts = 0.0  # the latest event time any of its facts lands at
        # The earliest event time of what ``compact`` may drop (math.inf: nothing)
        self.oldest = math.inf
        self.changed_at = 0.0  # wall time of its last change (``Engine.forget_customers``)

    def has(self, event_id: str) -> bool:
        return event_id in self.events

    def add_event(self, event_id: str, row: list[Any]) -> bool:
        """False (and nothing changes) when the id was applied before."""
        if event_id in self.events:
            return False
        self.events[event_id] = row
        end = _row_end(row)  # a cost spread over a period lands up to its end
        self.last_ts = max(self.last_ts, end)
        self.oldest = min(self.oldest, end)
        return True

    def put_deal(self, deal: Deal) -> bool:
        """Keep the lead's newest report; False when it is not newer than the one kept."""
        kept = self.deals.get(deal.lead_id)
        if kept is not None and (kept.version, kept) >= (deal.version, deal):
            return False
        self.deals[deal.lead_id] = deal
        if deal.won is not None:
            self.last_ts = max(self.last_ts, deal.won)
            self.oldest = min(self.oldest, deal.won)
        return True

    def compact(self, before: float) -> bool:
        """Drop what has left every window (landing before ``before``, the start of
        ``last_year``) and what is still to come does not need; True when anything went.

        Kept whatever their age: the first won deal (the customer's segment and its owner)
        and the latest win or churn before ``before`` (whether the customer was active
        then: after it, the same transitions follow from the rest, in any order of
        arrival). Deals no longer won stay: a lead's older report must not
        come back."""
        wins = [(float(d.won or 0.0), d.lead_id) for d in self.won_deals()]
        churns = [(row[1], eid) for eid, row in self.events.items() if row[0] == "churn"]
        # the timeline's order: at one instant the win first (``CustomerFacts._activity``)
        old = sorted([(t, 0, k) for t, k in wins] + [(t, 1, k) for t, k in churns])
        old = [entry for entry in old if entry[0] < before]
        keep_deals = {wins[0][1]} if wins else set()
        keep_events: set[str] = set()
        if old:
            (keep_events if old[-1][1] else keep_deals).add(old[-1][2])
        deals = [k for t, k in wins if t < before and k not in keep_deals]
        events = [e for e, row in self.events.items() if _row_end(row) < before]
        events = [e for e in events if e not in keep_events]
        for lead_id in deals:
            del self.deals[lead_id]
        for event_id in events:
            del self.events[event_id]
        ends = [t for t, k in wins if k in self.deals and k not in keep_deals]
        ends += [_row_end(row) for e, row in self.events.items() if e not in keep_events]
        self.oldest = min(ends, default=math.inf)
        return bool(deals or events)

    @property
    def live(self) -> bool:
        """Active now: its facts include a live one (kept whatever its age)."""
        return bool(self.won_deals()) and not self._churned_last()

    def _churned_last(self) -> bool:
        wins = self.won_deals()
        last_win = (wins[-1].won, 0) if wins else None
        churns = [(row[1], 1) for row in self.events.values() if row[0] == "churn"]
        return bool(churns) and last_win is not None and max(churns) > last_win

    def won_deals(self) -> list[Deal]:
        return sorted(
            (d for d in self.deals.values() if d.won is not None), key=lambda d: (d.won, d.lead_id)
        )

    # --- changelog encoding ----------------------------------------------------------------

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "c": self.customer_id,
                "p": self.partition,
                "d": [tuple(d) for d in self.deals.values()],
                "e": self.events,
                "t": self.changed_at,
                "o": self.oldest,  # JSON null: math.inf
            }
        )

    @classmethod
    def loads(cls, raw: bytes | Any) -> CustomerState:
        data = orjson.loads(bytes(raw))
        state = cls(data["c"], data["p"])
        for row in data["d"]:
            state.put_deal(Deal(*row))
        for event_id, row in data["e"].items():
            state.add_event(event_id, row)
        state.changed_at = data.get("t", 0.0)  # 0: written before it was recorded
        if "o" in data:  # else what it holds (the next sweep finds what may go)
            state.oldest = math.inf if data["o"] is None else data["o"]
        return state


class CustomerFacts:
    """A customer's facts: a pure function of its state (see the module's docstring)."""

    def __init__(self, clock: WindowClock) -> None:
        self.clock = clock

    def facts(self, customer: CustomerState) -> list[Fact]:
        out: list[Fact] = []
        wins = customer.won_deals()
        first = wins[0] if wins else None
        segment = first.segment if first is not None else None
        owner = first.rep if first is not None else None
        if first is not None:
            self._activity(customer, wins, first.segment, out)
            for deal in wins:  # in the customer's segment, whatever its lead's says
                out.append(("customer_revenue", (first.segment,), deal.won, deal.value))
        for row in customer.events.values():
            kind = row[0]
            if kind == "cost":
                self._cost(row, segment, out)
            elif first is None:
                continue  # churn and NPS count once the customer is known (won)
            elif kind == "churn":
                _, ts, reason, lost = row
                out.append(("churned", (first.segment, reason), ts, 1.0))
                if lost is not None:
                    out.append(("revenue_churned", (first.segment,), ts, float(lost)))
            else:
                _, ts, score, rep = row
                out.append(("nps", (str(rep or owner), nps_category(score)), ts, 1.0))
        return out

    @staticmethod
    def _activity(customer: CustomerState, wins: list[Deal], segment: str, out: list[Fact]) -> None:
        """Active from a won deal until a churn: the transitions, and whether active now.

        Ties at one instant: the won deal first (a churn at the moment of a win ends it)."""
        timeline = [(d.won, 0, d.lead_id) for d in wins]
        timeline += [(row[1], 1, eid) for eid, row in customer.events.items() if row[0] == "churn"]
        active = False
        for ts, churn, _ in sorted(timeline):
            if not churn and not active:
                out.append(("customer_activated", (segment,), ts, 1.0))
                active = True
            elif churn and active:
                out.append(("customer_lost", (segment,), ts, 1.0))
                active = False
        if active:
            out.append(("customer_active", (segment,), None, 1.0))

    def _cost(self, row: list[Any], customer_segment: str | None, out: list[Fact]) -> None:
        _, ts, amount, category, source, segment, start, end = row
        segment = segment or customer_segment
        for at, share in self.spread(ts, float(amount), start, end):
            out.append(("cost", (category, source), at, share))
            if category == "marketing":
                out.append(("marketing_cost", (source,), at, share))
            if segment is not None:
                out.append(("segment_cost", (segment,), at, share))

    def spread(
        self, ts: float, amount: float, start: float | None, end: float | None
    ) -> Iterator[tuple[float, float]]:
        """The amount by local day of ``[start, end)``, each day's share at the later of the
        day's midnight and ``start``; a day cut by the period counts its covered fraction.
        Without a period, all of it at ``ts``."""
        if start is None or end is None:
            yield ts, amount
            return
        # A period in year 1 (valid, and late) has days datetime cannot hold: the part of it
        # before them goes, in no window anyway.
        start, end = representable(start), representable(end)
        days: list[tuple[float, float]] = []  # (lands at, weight)
        day = self.clock.day(start)
        while True:
            lo, hi = self.clock.midnight(day), self.clock.midnight(day + 1)
            a, b = max(lo, start), min(hi, end)
            if b > a:
                days.append((a, (b - a) / (hi - lo)))
            if hi >= end:
                break
            day += 1
        total = sum(weight for _, weight in days)
        for at, weight in days:
            yield at, amount * weight / total
