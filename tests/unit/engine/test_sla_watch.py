"""The SLA watch on its own: due times, levels, once only, resolution, backfill horizon."""

from __future__ import annotations

from streamproc.business_hours import SlaClock
from streamproc.config import Settings
from streamproc.contract.outputs import Alert
from streamproc.engine.lead import Attempt, Created, LeadState
from streamproc.engine.sla_watch import BREACHED, RESOLVED, AlertWatch

T0 = 1_800_000_000.0
SETTINGS = Settings(_env_file=None, response_sla_seconds=300, sla_source_overrides={"vip": 60})


def _lead(lead_id: str = "L1", source: str = "web", first_seen: float = T0) -> LeadState:
    lead = LeadState(lead_id, 0, first_seen=first_seen)
    lead.add(Created(T0, f"{lead_id}-c", "r1", source, "t1", False, None))
    return lead


def _watch() -> AlertWatch:
    return AlertWatch(SETTINGS, SlaClock({}))


def test_breach_then_escalation_each_once() -> None:
    watch, lead = _watch(), _lead()
    leads = {"L1": lead}
    watch.schedule(lead)
    assert watch.due(leads, T0 + 299) == []
    [(_, first)] = watch.due(leads, T0 + 300.4)
    assert (first.kind, first.level, first.waited_seconds) == (BREACHED, 1, 300.4)
    lead.remember_alert(first.alert_id)
    watch.schedule(lead)
    assert watch.due(leads, T0 + 400) == []
    [(_, second)] = watch.due(leads, T0 + 600)
    assert second.level == 2 and second.alert_id != first.alert_id
    lead.remember_alert(second.alert_id)
    watch.schedule_all(leads.values())  # e.g. after a rebalance: nothing is due again
    assert watch.due(leads, T0 + 10_000) == []


def test_source_override_and_deterministic_ids() -> None:
    watch, lead = _watch(), _lead(source="vip")
    watch.schedule(lead)
    [(_, alert)] = watch.due({"L1": lead}, T0 + 61)
    assert alert.sla_seconds == 60
    assert alert.alert_id == Alert.make_id(BREACHED, 1, "L1")


def test_contact_before_the_deadline_cancels_it() -> None:
    watch, lead = _watch(), _lead()
    watch.schedule(lead)
    lead.add(Attempt(T0 + 100, "a1", "r1", "call", True, None))
    assert watch.due({"L1": lead}, T0 + 1000) == []
    assert watch.resolution(lead, T0 + 1000) is None  # never breached: nothing to resolve


def test_resolution_after_a_breach_once() -> None:
    watch, lead = _watch(), _lead()
    lead.remember_alert(Alert.make_id(BREACHED, 1, "L1"))
    lead.add(Attempt(T0 + 420, "a1", "r1", "call", False, None))
    alert = watch.resolution(lead, T0 + 425)
    assert alert is not None and alert.kind == RESOLVED and alert.level == 1
    assert alert.waited_seconds == 420
    lead.remember_alert(alert.alert_id)
    assert watch.resolution(lead, T0 + 430) is None


def test_backfill_older_than_the_horizon_is_not_alerted() -> None:
    watch = _watch()
    hour_old = _lead("old", first_seen=T0 + 3600)  # first seen an hour after creation
    recent = _lead("new", first_seen=T0 + 400)  # breach 100 s before first seen: still news
    leads = {"old": hour_old, "new": recent}
    watch.schedule_all(leads.values())
    fired = watch.due(leads, T0 + 3600)
    assert {(a.lead_id, a.level) for _, a in fired} == {("new", 1), ("new", 2)}
