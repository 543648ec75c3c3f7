"""The SLA watch on its own: due times, levels, once only, resolution, backfill horizon."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.business_hours import SlaClock
from streamproc.config import Settings
from streamproc.contract.outputs import Alert
from streamproc.engine.lead import Attempt, Created, LeadState
from streamproc.engine.sla_watch import BREACHED, RESOLVED, AlertWatch
from tests.support.leads import leads

T0 = 1_800_000_000.0
SETTINGS = Settings(
    _env_file=None,
    response_sla_seconds=300,
    sla_source_overrides={"vip": 60},
    alert_backfill_horizon_seconds=900,
)


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


def _publish(watch: AlertWatch, leads: dict[str, LeadState], now: float, sent: bool) -> set[str]:
    """An alert round as ``AlertPublisher.publish_due`` runs it: the alerts due remembered
    in their leads, or (not ``sent``) their deadlines scheduled again."""
    fired = watch.due(leads, now)
    for lead, alert in fired:
        if sent:
            lead.remember_alert(alert.alert_id)
        watch.schedule(lead)
    return {alert.alert_id for _, alert in fired} if sent else set()


def _copy(leads: dict[str, LeadState]) -> dict[str, LeadState]:
    return {key: LeadState.loads(lead.dumps()) for key, lead in leads.items()}


_steps = st.lists(
    st.tuples(st.integers(1, 900), st.sampled_from(["round", "failed round", "contact", "forget"])),
    max_size=12,
)


_partitions = st.lists(st.integers(0, 1), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    _partitions.flatmap(
        lambda ps: st.tuples(*(leads(f"L{i}", p) for i, p in enumerate(ps))).map(list)
    ),
    _steps,
    st.lists(st.integers(1, 2000), min_size=1, max_size=6),
    st.integers(0, 100),
)
def test_deadlines_kept_by_a_snapshot_fire_as_derived_ones(
    drawn: list[LeadState], before: list[tuple[int, str]], after: list[int], pick: int
) -> None:
    """Whatever the watch went through (rounds that published or failed, leads contacted
    or forgotten), its deadlines taken into a snapshot and restored, the partitions without
    one derived from their leads, fire the same alerts as deadlines derived from every lead
    (what a rebuild does), at every later round."""
    leads = {lead.lead_id: lead for lead in drawn}
    watch, now = _watch(), T0 - 3600
    watch.schedule_all(leads.values())
    for wait, step in before:
        now += wait
        lead_id = f"L{(pick + wait) % len(drawn)}"
        if step in ("round", "failed round"):
            _publish(watch, leads, now, sent=step == "round")
        elif step == "contact" and lead_id in leads:
            leads[lead_id].add(Attempt(now, f"{lead_id}-late", "r1", "call", True, None))
            watch.schedule(leads[lead_id])
        elif step == "forget":
            leads.pop(lead_id, None)
    kept = watch.deadlines(leads)
    restored, derived = _copy(leads), _copy(leads)
    from_snapshot, rebuilt = _watch(), _watch()
    from_snapshot.schedule_all(
        [lead for lead in restored.values() if lead.partition == 1], kept.get(0, [])
    )
    rebuilt.schedule_all(derived.values())
    assert all(leads[lead_id].partition == p for p, ds in kept.items() for lead_id, _, _ in ds)
    for wait in after:
        now += wait
        assert _publish(from_snapshot, restored, now, True) == _publish(rebuilt, derived, now, True)


def test_a_breach_of_a_lead_created_in_year_one_is_an_alert() -> None:
    # 0001-01-01T00:00:00+14:00 is an instant of year 0: its alert has a date all the same
    # (the first datetime holds) rather than failing the batch that changed the lead.
    created = datetime.fromisoformat("0001-01-01T00:00:00+14:00").timestamp()
    lead = LeadState("L1", 0, first_seen=created)
    lead.add(Created(created, "L1-c", "r1", "web", "t1", False, None))
    watch = _watch()
    watch.schedule(lead)
    [(_, alert)] = watch.due({"L1": lead}, created + 300)
    assert alert.lead_created_at.year == 1
