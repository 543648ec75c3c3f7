"""Derived facts: what one lead's state contributes to the aggregates.

A fact is ``(family, labels, t, value)``: ``t`` is the event time of the window it lands in
(``None`` for live facts, which hold while the lead is in that state). Facts are a pure
function of the lead state, so an aggregate can retract a lead's old facts and add its new
ones whenever the lead changes: that is what makes late and out-of-order events exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from streamproc.config import Settings
from streamproc.lead import LeadState, StageMove

__all__ = ["Fact", "FactDeriver", "due_wall_clock"]


class Fact(NamedTuple):
    family: str
    labels: tuple[str, ...]
    t: float | None
    value: float


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

    def facts(self, lead: LeadState) -> list[Fact]:
        out: list[Fact] = []
        source = lead.source
        self._activity(lead, out)
        self._speed_to_lead(lead, source, out)
        self._pipeline(lead, source, out)
        self._email(lead, out)
        return out

    # --- families ----------------------------------------------------------------------

    def _activity(self, lead: LeadState, out: list[Fact]) -> None:
        for a in lead.attempts:
            out.append(Fact("attempt", (a.rep, a.channel), a.ts, 1.0))
            if a.connected:
                out.append(Fact("connect", (a.rep, a.channel), a.ts, 1.0))
            out.append(Fact("active", (a.rep,), a.ts, 1.0))
        for c in lead.created:
            out.append(Fact("active", (c.rep,), c.ts, 1.0))
        for s in lead.stages:
            out.append(Fact("active", (s.rep,), s.ts, 1.0))

    def _speed_to_lead(self, lead: LeadState, source: str, out: list[Fact]) -> None:
        creation = lead.creation
        if creation is None:
            return
        out.append(Fact("created", (creation.rep, source), creation.ts, 1.0))
        sla = self.settings.sla_for(source)
        first = lead.first_attempt()
        if first is not None:
            response = max(0.0, first.ts - creation.ts)
            out.append(Fact("first_contact", (first.rep,), first.ts, response))
            if response <= sla:
                out.append(Fact("first_contact_in_sla", (first.rep,), first.ts, 1.0))
            return
        history = lead.stages
        if history and max(history).to_stage in (self._won, self._lost):
            return  # closed without contact: nobody is waiting on it any more
        owner = creation.rep
        team = creation.team
        out.append(Fact("awaiting", (owner, source), None, 1.0))
        out.append(Fact("awaiting_since", (owner,), None, creation.ts))
        risk = self.settings.at_risk_fraction
        out.append(Fact("awaiting_risk", (owner,), None, self.due(creation.ts, sla, team, risk)))
        out.append(Fact("awaiting_due", (owner,), None, self.due(creation.ts, sla, team, 1.0)))

    def _pipeline(self, lead: LeadState, source: str, out: list[Fact]) -> None:
        history = lead.stage_history()
        if not history:
            return
        existing = bool(lead.creation and lead.creation.existing)
        value = self._deal_value(lead, history)
        for i, move in enumerate(history):
            out.append(Fact("stage_entry", (move.to_stage,), move.ts, 1.0))
            if i + 1 < len(history):
                self._stage_exit(move, history[i + 1], out)
            if move.to_stage == self._won:
                out.append(Fact("won", (move.rep, source), move.ts, 1.0))
                out.append(Fact("won_src", (source,), move.ts, 1.0))
                out.append(Fact("won_value", (move.rep,), move.ts, value))
                if existing:
                    out.append(Fact("won_existing", (), move.ts, 1.0))
            elif move.to_stage == self._lost:
                reason = move.lost_reason or "unknown"
                out.append(Fact("lost", (move.rep, reason), move.ts, 1.0))
                out.append(Fact("lost_src", (source,), move.ts, 1.0))
        current = history[-1]
        if current.to_stage in (self._won, self._lost):
            return
        probability = current.probability
        if probability is None:
            probability = self.settings.default_probability(current.to_stage)
        owner = lead.owner
        out.append(Fact("pipeline_value", (owner, current.to_stage), None, value))
        out.append(Fact("forecast_value", (owner,), None, value * probability))

    def _stage_exit(self, move: StageMove, nxt: StageMove, out: list[Fact]) -> None:
        stage = move.to_stage
        out.append(Fact("stage_exit", (stage,), nxt.ts, nxt.ts - move.ts))
        target = nxt.to_stage
        forward = target != self._lost and self._rank.get(target, -1) > self._rank.get(stage, -1)
        if forward:
            out.append(Fact("stage_forward", (stage,), nxt.ts, 1.0))

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
            out.append(Fact("email_sent", (a.rep,), a.ts, 1.0))
            if a.message_id in opened:
                out.append(Fact("email_opened", (a.rep,), a.ts, 1.0))
            if a.message_id in clicked:
                out.append(Fact("email_clicked", (a.rep,), a.ts, 1.0))
