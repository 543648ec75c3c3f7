"""Derived facts: what one lead's state contributes to the aggregates.

A fact is ``(family, labels, t, value)``: ``t`` is the event time of the window it lands in
(``None`` for live facts, which hold while the lead is in that state). Facts are a pure
function of the lead state, so an aggregate can retract a lead's old facts and add its new
ones whenever the lead changes: that is what makes late and out-of-order events exact.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streamproc.config import Settings
from streamproc.engine.lead import Attempt, Created, LeadState, Open, StageMove

__all__ = [
    "EMAIL",
    "EVERY_GROUP",
    "FAMILIES",
    "PIPELINE",
    "SPEED",
    "Fact",
    "FactDeriver",
    "Family",
    "due_wall_clock",
]


Fact = tuple[str, tuple[str, ...], float | None, float]
"""``(family, labels, t, value)``: ``t`` is the event time of the window the fact lands in
(None for a live fact), ``value`` its number (1.0 for most: then it only counts). A plain
tuple: the deriver makes millions, and a NamedTuple costs more to build."""


@dataclass(frozen=True, slots=True)
class Family:
    """A kind of fact: the names of its labels (in order), whether it is live (``t`` is None:
    it holds while the lead is in that state), whether its individual values are kept
    (for quantiles, minima and deadlines; the others keep counts and totals only) and
    whether its facts land on days to come (a cost's shares; any other fact is at most 5
    minutes ahead, events.md)."""

    labels: tuple[str, ...]
    meaning: str
    live: bool = False
    values: bool = False
    days_ahead: bool = False


# Every fact family the deriver emits. A new family is declared here and derived below; the
# KPI catalogue (``streamproc.kpis.catalogue``) reads families by these names.
FAMILIES: Mapping[str, Family] = {
    "created": Family(("rep", "source"), "a lead created, at its creation"),
    "first_contact": Family(
        ("rep",), "a lead's first contact attempt; value: seconds since creation", values=True
    ),
    "first_contact_in_sla": Family(
        ("rep",), "a first contact made within the SLA, on the alerts' clock (business hours)"
    ),
    "attempt": Family(("rep", "channel"), "a contact attempt"),
    "connect": Family(("rep", "channel"), "a contact attempt that connected"),
    "active": Family(
        ("rep",),
        "a rep's own event: a lead created for them, a contact attempt or a stage move of "
        "theirs (an email open is the lead's act, an NPS answer the customer's)",
    ),
    # A deal enters a stage when it moves there from another one (or from none): a move to
    # the stage it is in restates it, it is no entry, exit or activity (``_entries``)
    "stage_entry": Family(("stage",), "a deal entering a stage (not one it is in)"),
    "stage_exit": Family(
        ("stage",),
        "a deal leaving a stage, at its move to another; value: seconds since it entered it",
        values=True,
    ),
    "stage_forward": Family(("stage",), "a stage exit that moved forward"),
    # A deal is won once: at its first won move, by that move's rep (``_win``)
    "won": Family(("rep", "source"), "a deal closed won, by the closing rep"),
    "won_src": Family(("source",), "a deal closed won, by the lead's source"),
    "won_value": Family(("rep",), "a deal closed won; value: its deal value"),
    "won_existing": Family((), "a deal closed won from an existing customer"),
    "won_new": Family(("rep", "source"), "a deal closed won from a lead not an existing customer"),
    "won_ch": Family(
        ("channel",),
        "a deal closed won, by the channel of the lead's first connected attempt (none: never)",
    ),
    "lost_ch": Family(("channel",), "a deal closed lost, by the channel as for won_ch"),
    # The team's totals of the target measures (one series each), for team targets
    "team_attempt": Family((), "a contact attempt (the team's count)"),
    "team_created": Family((), "a lead created (the team's count)"),
    "team_won_new": Family((), "a deal won from a new customer (the team's count)"),
    "team_forecast": Family(
        (), "an open deal; value: deal value x win probability (the team's)", live=True
    ),
    "stage_response": Family(
        ("stage",),
        "the next rep activity (attempt or move to another stage) after a deal entered an "
        "open stage, at the activity; value: seconds since the entry",
        values=True,
    ),
    "lost": Family(("rep", "reason"), "a deal closed lost"),
    "lost_src": Family(("source",), "a deal closed lost, by the lead's source"),
    "email_sent": Family(("rep",), "an email sent, at its send time"),
    "email_opened": Family(("rep",), "an email sent and opened, at its send time"),
    "email_clicked": Family(("rep",), "an email sent and clicked, at its send time"),
    "awaiting": Family(("rep", "source"), "a lead waiting for its first contact", live=True),
    "awaiting_since": Family(
        ("rep",), "a waiting lead; value: its creation time", live=True, values=True
    ),
    "awaiting_risk": Family(
        ("rep",), "a waiting lead; value: when it becomes at risk", live=True, values=True
    ),
    "awaiting_due": Family(
        ("rep",), "a waiting lead; value: when its SLA passes", live=True, values=True
    ),
    "pipeline_value": Family(("rep", "stage"), "an open deal; value: its deal value", live=True),
    "forecast_value": Family(
        ("rep",), "an open deal; value: deal value x win probability", live=True
    ),
    # business outcomes (spec/business-events.md): products of won deals, from the leads
    "product_win": Family(("product",), "a won deal that included the product"),
    "product_pair": Family(
        ("product_a", "product_b"), "a won deal that included both (product_a < product_b)"
    ),
    "product_attach": Family(
        ("product_a", "product_b"), "a won deal that included both (both orders)"
    ),
    # business outcomes, from the customers (``engine.customer``)
    "customer_active": Family(("segment",), "a customer won and not churned since", live=True),
    # Not a lead's: a customer's segment is its first won deal's, and business-events.md
    # counts "revenue won from the segment's customers" (an upsell lead that names no segment
    # was "default" revenue of an enterprise customer). A new name: the rollups of leads
    # forgotten before hold "segment_revenue", which ``restore`` now skips, not adds twice.
    "customer_revenue": Family(("segment",), "a won deal of a customer; value: its deal value"),
    "customer_activated": Family(("segment",), "a customer becoming active (won)"),
    "customer_lost": Family(("segment",), "an active customer churning"),
    "churned": Family(("segment", "reason"), "a churn event of a known customer"),
    "revenue_churned": Family(("segment",), "a churn event; value: revenue_lost"),
    "nps": Family(("rep", "category"), "an NPS answer of a known customer"),
    "cost": Family(
        ("category", "source"), "a cost; value: its amount (that day's share)", days_ahead=True
    ),
    "marketing_cost": Family(("source",), "a marketing cost; value: its amount", days_ahead=True),
    "segment_cost": Family(
        ("segment",), "a cost of a segment or of its customer; value", days_ahead=True
    ),
}


# The groups of re-derived facts, as bits: an event re-derives only the groups it can change.
# An email open changes its email's facts only, a later call a deal's pipeline facts only;
# re-deriving every group for every event held the engine at 13,600 events/s in-process on
# the bench history, 16,600 with the groups.
SPEED = 1  # speed to lead: the creation, the first contact, the wait for it
PIPELINE = 2  # the deal's stages, its value, forecast, products
EMAIL = 4  # the emails sent and their opens and clicks
EVERY_GROUP = SPEED | PIPELINE | EMAIL


# (created_ts, sla_seconds, team, fraction) -> the instant that fraction of the SLA has run.
DueFunction = Callable[[float, float, str, float], float]


def due_wall_clock(created_ts: float, sla: float, team: str, fraction: float) -> float:
    """Without business hours the SLA clock is the wall clock."""
    return created_ts + sla * fraction


class FactDeriver:
    """Turns a lead state into its facts, by the pipeline and SLA settings."""

    def __init__(self, settings: Settings, due: DueFunction = due_wall_clock) -> None:
        self.settings = settings
        self.due = due
        self._rank = {stage: i for i, stage in enumerate(settings.stages)}
        self._won = settings.won_stage
        self._lost = settings.lost_stage

    @staticmethod
    def event_facts(item: Created | Attempt | StageMove | Open) -> list[Fact]:
        """Facts of one event alone: they never change when other events of the lead arrive,
        so they are added once, not re-derived (most of the facts, and the cheap path)."""
        if isinstance(item, Attempt):
            labels = (item.rep, item.channel)
            out: list[Fact] = [
                ("attempt", labels, item.ts, 1.0),
                ("team_attempt", (), item.ts, 1.0),
                ("active", (item.rep,), item.ts, 1.0),
            ]
            if item.connected:
                out.append(("connect", labels, item.ts, 1.0))
            return out
        if isinstance(item, (StageMove, Created)):
            # A move's stage entry is no event fact: whether it enters its stage depends on
            # the move before it, which a late event can change (``_pipeline``)
            return [("active", (item.rep,), item.ts, 1.0)]
        return []

    def affects(self, lead: LeadState, item: Created | Attempt | StageMove | Open) -> int:
        """The groups of ``facts(lead)`` that applying ``item`` can change (0: none, skip
        re-deriving). A later attempt changes neither the first contact nor the other
        emails, an open of an email not sent (yet) joins nothing, and a move after the
        first attempt leaves the speed to lead alone: most events."""
        if isinstance(item, Attempt):
            first = lead.first_attempt()
            if first is None or item < first:
                return EVERY_GROUP  # the first contact (and the owner of a lead not created)
            groups = EMAIL if item.channel == "email" else 0
            if lead.stages and self._affects_pipeline(lead, item):
                groups |= PIPELINE
            return groups
        if isinstance(item, Open):
            return EMAIL if any(a.message_id == item.message_id for a in lead.attempts) else 0
        if isinstance(item, StageMove):
            # a deal closed without contact is not waiting any more; once contacted, the
            # speed to lead is the creation's and the first attempt's alone
            return PIPELINE if lead.attempts else SPEED | PIPELINE
        return EVERY_GROUP

    def _affects_pipeline(self, lead: LeadState, item: Attempt) -> bool:
        """A later attempt on a deal: it changes the channel of first connection when it
        connects before any other attempt did, and a stage's response time when it is the
        first activity after the entry into an open stage (``_stage_response``; a move to
        the stage the deal is in is no activity). Lists rather than generators where every
        attempt runs them (cheaper in CPython)."""
        attempts = lead.attempts
        if item.connected:
            connected = [a for a in attempts if a.connected]
            if not connected or item < min(connected):
                return True
        t, stages = item.ts, lead.stages
        closed = (self._won, self._lost)
        last = self._unanswered(stages, attempts, t)
        if last and len(stages) > len(last) and all(m.to_stage in closed for m in last):
            # Closing moves: restating a closed stage they are no activity, and an open
            # stage entered before them (tied with the closing) may still wait for one
            history = lead.stage_history()
            last = self._unanswered([history[i] for i in self._entries(history)], attempts, t)
        return any(m.to_stage not in closed for m in last)

    @staticmethod
    def _unanswered(moves: list[StageMove], attempts: list[Attempt], t: float) -> list[StageMove]:
        """The latest of ``moves`` before ``t`` (those at its time) unless an attempt came
        after it, before ``t``; none when there is no move before ``t``."""
        last = max([m.ts for m in moves if m.ts < t], default=None)
        if last is None or [a for a in attempts if last < a.ts < t]:
            return []
        return [m for m in moves if m.ts == last]

    def facts(self, lead: LeadState, groups: int = EVERY_GROUP) -> list[Fact]:
        """Facts that depend on several events of the lead, of the ``groups`` asked for:
        re-derived when it changes."""
        out: list[Fact] = []
        if groups & SPEED:
            self._speed_to_lead(lead, lead.source, out)
        if groups & PIPELINE:
            self._pipeline(lead, lead.source, out)
        if groups & EMAIL:
            self._email(lead, out)
        return out

    def all_facts(self, lead: LeadState) -> list[Fact]:
        out = self.facts(lead)
        for group in (lead.created, lead.attempts, lead.stages):
            for item in group:
                out.extend(self.event_facts(item))
        return out

    # --- families ----------------------------------------------------------------------

    def _speed_to_lead(self, lead: LeadState, source: str, out: list[Fact]) -> None:
        creation = lead.creation
        if creation is None:
            return
        out.append(("created", (creation.rep, source), creation.ts, 1.0))
        out.append(("team_created", (), creation.ts, 1.0))
        sla = self.settings.sla_for(source)
        first = lead.first_attempt()
        if first is not None:
            response = max(0.0, first.ts - creation.ts)
            out.append(("first_contact", (first.rep,), first.ts, response))
            # within the SLA on the alerts' clock (business hours when set): a lead no
            # breach was alerted for counts as answered in time
            if first.ts <= self.due(creation.ts, sla, creation.team, 1.0):
                out.append(("first_contact_in_sla", (first.rep,), first.ts, 1.0))
            return
        history = lead.stages
        if history and max(history).to_stage in (self._won, self._lost):
            return  # closed without contact: nobody is waiting on it any more
        owner = creation.rep
        team = creation.team
        out.append(("awaiting", (owner, source), None, 1.0))
        out.append(("awaiting_since", (owner,), None, creation.ts))
        risk = self.settings.at_risk_fraction
        out.append(("awaiting_risk", (owner,), None, self.due(creation.ts, sla, team, risk)))
        out.append(("awaiting_due", (owner,), None, self.due(creation.ts, sla, team, 1.0)))

    @staticmethod
    def _entries(history: list[StageMove]) -> list[int]:
        """The indexes of the moves of ``history`` (in event-time order) that enter their
        stage: the first, and each to another stage than the one before it. A move to the
        stage the deal is in (won to won, lost to lost, proposal to proposal) restates it:
        its values count (deal value, probability, reason, products), but it is no entry,
        no exit and no activity; a deal that left the stage and comes back enters it again."""
        out, stage = [], None
        for i, move in enumerate(history):
            if move.to_stage != stage:
                out.append(i)
                stage = move.to_stage
        return out

    def _pipeline(self, lead: LeadState, source: str, out: list[Fact]) -> None:
        history = lead.stage_history()
        if not history:
            return
        value = self._deal_value(lead, history)
        channel = self._connected_channel(lead)
        entries = self._entries(history)
        activity = sorted([a.ts for a in lead.attempts] + [history[i].ts for i in entries])
        for k, i in enumerate(entries):
            move = history[i]
            out.append(("stage_entry", (move.to_stage,), move.ts, 1.0))
            if k + 1 < len(entries):
                self._stage_exit(move, history[entries[k + 1]], out)
            if move.to_stage == self._lost:
                self._loss(history, i, source, channel, out)  # once: lost to lost restates
            elif move.to_stage != self._won:
                self._stage_response(move, activity, out)
        wins = [move for move in history if move.to_stage == self._won]
        if wins:
            self._win(lead, wins, value, channel, out)
        current = history[-1]
        if current.to_stage in (self._won, self._lost):
            return
        probability = current.probability
        if probability is None:
            probability = self.settings.default_probability(current.to_stage)
        owner = lead.owner
        out.append(("pipeline_value", (owner, current.to_stage), None, value))
        out.append(("forecast_value", (owner,), None, value * probability))
        out.append(("team_forecast", (), None, value * probability))

    def _loss(
        self, history: list[StageMove], i: int, source: str, channel: str, out: list[Fact]
    ) -> None:
        """The deal lost at move ``i``, once: a lost event right after it (lost to lost) is
        a restatement, as a won event of a won deal is (``_win``); the last reason it gives
        stands, at the first lost move, by its rep."""
        move, reason = history[i], None
        for later in history[i:]:
            if later.to_stage != self._lost:
                break
            reason = later.lost_reason or reason
        labels = (move.rep, reason or "unknown")
        out.append(("lost", labels, move.ts, 1.0))
        out.append(("lost_src", (source,), move.ts, 1.0))
        out.append(("lost_ch", (channel,), move.ts, 1.0))

    def _win(
        self, lead: LeadState, wins: list[StageMove], value: float, channel: str, out: list[Fact]
    ) -> None:
        """The deal's win (``wins``: its won moves, in event-time order; ``value``: the
        deal's value; ``channel``: that of the lead's first connected attempt, "none" when
        none connected).

        A deal is won once, at its first won move and by that move's rep: a later won event
        of it (won to won, a correction, the products filled in) restates the win, it is not
        another one, whatever order they arrive in. What it restates counts at the first
        win: the deal's value is the last ``deal_value`` given (events.md), the products
        the last list given (business-events.md)."""
        at, rep = wins[0].ts, wins[0].rep
        source, creation = lead.source, lead.creation
        out.append(("won", (rep, source), at, 1.0))
        out.append(("won_src", (source,), at, 1.0))
        out.append(("won_value", (rep,), at, value))
        out.append(("won_ch", (channel,), at, 1.0))
        if creation is not None and creation.existing:
            out.append(("won_existing", (), at, 1.0))
        else:
            out.append(("won_new", (rep, source), at, 1.0))
            out.append(("team_won_new", (), at, 1.0))
        listed = [move.products for move in wins if move.products is not None]
        if listed:
            self._products(listed[-1], at, out)

    @staticmethod
    def _products(products: tuple[str, ...], at: float, out: list[Fact]) -> None:
        """The products of a won deal (sorted, unique), each and in pairs, at its win."""
        for i, a in enumerate(products):
            out.append(("product_win", (a,), at, 1.0))
            for b in products[i + 1 :]:  # sorted: a < b
                out.append(("product_pair", (a, b), at, 1.0))
                out.append(("product_attach", (a, b), at, 1.0))
                out.append(("product_attach", (b, a), at, 1.0))

    @staticmethod
    def _connected_channel(lead: LeadState) -> str:
        connected = [a for a in lead.attempts if a.connected]
        return min(connected).channel if connected else "none"

    @staticmethod
    def _stage_response(move: StageMove, activity: list[float], out: list[Fact]) -> None:
        """From the deal entering an open stage to the next attempt or entry into another
        stage after it (``activity``; none yet: no fact), landing at that activity."""
        i = bisect_right(activity, move.ts)
        if i < len(activity):
            nxt = activity[i]
            out.append(("stage_response", (move.to_stage,), nxt, nxt - move.ts))

    def _stage_exit(self, move: StageMove, nxt: StageMove, out: list[Fact]) -> None:
        """The deal left the stage ``move`` entered at ``nxt``, its next entry (moves to the
        same stage between them restate it)."""
        stage = move.to_stage
        out.append(("stage_exit", (stage,), nxt.ts, nxt.ts - move.ts))
        target = nxt.to_stage
        forward = target != self._lost and self._rank.get(target, -1) > self._rank.get(stage, -1)
        if forward:
            out.append(("stage_forward", (stage,), nxt.ts, 1.0))

    def deal_value(self, lead: LeadState) -> float:
        """The deal's value as the facts use it (see ``_deal_value``)."""
        return self._deal_value(lead, lead.stage_history())

    @staticmethod
    def _deal_value(lead: LeadState, history: list[StageMove]) -> float:
        for move in reversed(history):
            if move.deal_value is not None:
                return float(move.deal_value)
        creation = lead.creation
        if creation is not None and creation.estimated_value is not None:
            return float(creation.estimated_value)
        return 0.0

    def _email(self, lead: LeadState, out: list[Fact]) -> None:
        sends = [a for a in lead.attempts if a.channel == "email" and a.message_id]
        if not sends:
            return
        opened: set[str] = set()
        clicked: set[str] = set()
        for o in lead.opens:
            opened.add(o.message_id)
            if o.clicked:
                clicked.add(o.message_id)
        for a in sends:
            out.append(("email_sent", (a.rep,), a.ts, 1.0))
            if a.message_id in opened:
                out.append(("email_opened", (a.rep,), a.ts, 1.0))
            if a.message_id in clicked:
                out.append(("email_clicked", (a.rep,), a.ts, 1.0))
