"""The SLA watch: which waiting leads are due an alert, and which breached leads are resolved.

Pure logic over lead states: the topology's timer asks ``due()`` twice a second and
publishes what it returns; the batch handler asks ``resolution()`` for every changed lead.
What was published is remembered in the lead state (``LeadState.alerts``), which travels
with the lead's changelog: the partition's next owner knows it too.

A recovery derives the deadlines from every lead (``schedule_all``), or takes those a
snapshot kept (``deadlines``; ``state.snapshots``): the deadlines scheduled when the
snapshot was taken of leads unchanged since stand for the derivation; so do those this
watch holds for the partitions a rebalance left with the worker. A deadline is
dropped only once it came due (``due``) and was then checked against its lead: what was
dropped without an alert (a lead contacted, forgotten, or a breach older than the backfill
horizon) a derivation would drop again at its first ``due``; one whose alert could not be
published is scheduled again (``AlertPublisher.publish_due``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from streamproc.business_hours import SlaClock
from streamproc.config import Settings
from streamproc.contract.outputs import Alert, AlertKind
from streamproc.engine.lead import LeadState
from streamproc.instants import representable

__all__ = ["BREACHED", "RESOLVED", "AlertWatch", "Deadline"]

BREACHED: AlertKind = "response_sla_breached"
RESOLVED: AlertKind = "response_sla_resolved"
LEVELS = (1, 2)  # at the SLA, and at twice the SLA (escalation)
Deadline = tuple[str, int, float]  # (lead id, level, due)


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(representable(ts), UTC)  # a lead of year 0: year 1


class AlertWatch:
    """Deadlines of waiting leads in a heap; validated again when they come due."""

    def __init__(self, settings: Settings, clock: SlaClock) -> None:
        self.settings = settings
        self.clock = clock
        self._heap: list[tuple[float, str, int]] = []
        self._scheduled: dict[tuple[str, int], float] = {}
        self._closed = settings.closed_stages

    # --- scheduling ----------------------------------------------------------------------

    def waiting(self, lead: LeadState) -> bool:
        if not lead.created or lead.attempts:
            return False
        return not (lead.stages and max(lead.stages).to_stage in self._closed)

    def deadline(self, lead: LeadState, level: int) -> float:
        creation = lead.creation
        assert creation is not None  # only waiting leads have deadlines
        sla = self.settings.sla_for(creation.source)
        return self.clock.due(creation.ts, sla, creation.team, float(level))

    def schedule(self, lead: LeadState) -> None:
        """(Re)consider a lead after it changed or was recovered."""
        if not self.waiting(lead):
            return
        for level in LEVELS:
            if Alert.make_id(BREACHED, level, lead.lead_id) in lead.alerts:
                continue
            due = self.deadline(lead, level)
            key = (lead.lead_id, level)
            if self._scheduled.get(key) != due:
                self._scheduled[key] = due
                heapq.heappush(self._heap, (due, lead.lead_id, level))

    def schedule_all(self, leads: Iterable[LeadState] = (), kept: Iterable[Deadline] = ()) -> None:
        """Start again from recovered state: the deadlines ``kept`` (by snapshots, of leads
        unchanged since; by this watch, of the partitions a rebalance left here) and those
        of ``leads`` (the others), each lead read."""
        self._scheduled = {(lead_id, level): due for lead_id, level, due in kept}
        self._heap = [(due, lead_id, level) for (lead_id, level), due in self._scheduled.items()]
        heapq.heapify(self._heap)
        for lead in leads:
            with lead.reading():
                self.schedule(lead)

    def deadlines(self, leads: Mapping[str, LeadState]) -> dict[int, list[Deadline]]:
        """The deadlines scheduled, by partition of their lead (a lead no longer in
        ``leads`` has none: it was forgotten): for the snapshots."""
        out: dict[int, list[Deadline]] = {}
        for (lead_id, level), due in self._scheduled.items():
            lead = leads.get(lead_id)
            if lead is not None:
                out.setdefault(lead.partition, []).append((lead_id, level, due))
        return out

    # --- what to publish -------------------------------------------------------------------

    def due(self, leads: Mapping[str, LeadState], now: float) -> list[tuple[LeadState, Alert]]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, lead_id, level = heapq.heappop(heap)
            if self._scheduled.get((lead_id, level)) != due:
                continue  # superseded by a later schedule of the same deadline
            del self._scheduled[(lead_id, level)]
            lead = leads.get(lead_id)
            if lead is None:
                continue
            with lead.reading():
                alert = self._due_alert(lead, level, due, now)
            if alert is not None:
                out.append((lead, alert))
        return out

    def _due_alert(self, lead: LeadState, level: int, due: float, now: float) -> Alert | None:
        if not self.waiting(lead) or self.deadline(lead, level) != due:
            return None
        # Checked before the alert is built (a uuid5 and a model): catching up a history,
        # nearly every lead's deadline is due, and long past.
        if self._backfilled(lead, due):
            return None
        if Alert.make_id(BREACHED, level, lead.lead_id) in lead.alerts:
            return None
        return self.breach(lead, level, now)

    def _backfilled(self, lead: LeadState, due: float) -> bool:
        """A breach already old when the lead was first seen: a replay, not news."""
        return due + self.settings.alert_backfill_horizon_seconds < lead.first_seen

    def breach(self, lead: LeadState, level: int, now: float) -> Alert:
        creation = lead.creation
        assert creation is not None
        return self._alert(BREACHED, level, lead, now, waited=now - creation.ts)

    def resolution(self, lead: LeadState, now: float) -> Alert | None:
        """The resolution of a breached lead whose first contact has come, once."""
        if not lead.alerts:
            return None  # never breached: the common case, asked for every lead changed
        first = lead.first_attempt()
        if first is None or lead.creation is None:
            return None
        breached = [
            lvl for lvl in LEVELS if Alert.make_id(BREACHED, lvl, lead.lead_id) in lead.alerts
        ]
        if not breached:
            return None
        level = max(breached)
        alert = self._alert(RESOLVED, level, lead, now, waited=first.ts - lead.creation.ts)
        return None if alert.alert_id in lead.alerts else alert

    def _alert(
        self, kind: AlertKind, level: int, lead: LeadState, now: float, waited: float
    ) -> Alert:
        creation = lead.creation
        assert creation is not None
        return Alert(
            alert_id=Alert.make_id(kind, level, lead.lead_id),
            kind=kind,
            level=level,  # type: ignore[arg-type]  # 1 or 2: LEVELS
            lead_id=lead.lead_id,
            rep_id=creation.rep,
            team_id=creation.team,
            source=creation.source,
            lead_created_at=_iso(creation.ts),
            sla_seconds=self.settings.sla_for(creation.source),
            waited_seconds=round(max(0.0, waited), 3),
            fired_at=_iso(now),
        )
