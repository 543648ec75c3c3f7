"""The deriver's shortcut: an event re-derives only the groups of facts it can change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import Settings
from streamproc.engine.facts import EMAIL, PIPELINE, SPEED, FactDeriver
from streamproc.engine.lead import Attempt, Created, LeadState, Open, StageMove

SETTINGS = Settings(_env_file=None)
DERIVER = FactDeriver(SETTINGS)
GROUPS = (SPEED, PIPELINE, EMAIL)

# Few distinct times, so that ties (an attempt at the second of a stage move) are common.
_ts = st.integers(0, 6).map(float)
_created = st.builds(
    Created,
    ts=_ts,
    event_id=st.sampled_from(["c1", "c2"]),
    rep=st.sampled_from(["r1", "r2"]),
    source=st.just("web"),
    team=st.just("t"),
    existing=st.booleans(),
    estimated_value=st.sampled_from([None, 100.0]),
)
_attempt = st.builds(
    Attempt,
    ts=_ts,
    event_id=st.sampled_from([f"a{i}" for i in range(6)]),
    rep=st.sampled_from(["r1", "r2"]),
    channel=st.sampled_from(["call", "email", "meeting"]),
    connected=st.booleans(),
    message_id=st.sampled_from([None, "m1", "m2"]),
)
_move = st.builds(
    StageMove,
    ts=_ts,
    event_id=st.sampled_from([f"s{i}" for i in range(5)]),
    rep=st.sampled_from(["r1", "r2"]),
    to_stage=st.sampled_from(list(SETTINGS.stages)),
    deal_value=st.sampled_from([None, 500.0]),
    probability=st.none(),
    lost_reason=st.none(),
)
_open = st.builds(
    Open,
    ts=_ts,
    event_id=st.sampled_from(["o1", "o2"]),
    message_id=st.sampled_from(["m1", "m2"]),
    clicked=st.booleans(),
)
_item = st.one_of(_created, _attempt, _move, _open)


@settings(max_examples=400, deadline=None)
@given(items=st.lists(_item, max_size=8), new=_item)
def test_a_group_the_event_does_not_affect_keeps_its_facts(items: list, new: object) -> None:  # type: ignore[type-arg]
    lead = LeadState("L1", 0)
    for item in items:
        if not lead.has(item.event_id):
            lead.append(item)
    if lead.has(new.event_id):  # type: ignore[attr-defined]
        return  # a duplicate: the engine drops it before asking
    affected = DERIVER.affects(lead, new)  # type: ignore[arg-type]
    before = {g: sorted(DERIVER.facts(lead, g), key=repr) for g in GROUPS}
    lead.append(new)  # type: ignore[arg-type]
    for group in GROUPS:
        if not affected & group:
            assert sorted(DERIVER.facts(lead, group), key=repr) == before[group], group


def test_a_later_call_after_an_answered_stage_re_derives_nothing() -> None:
    """The common case the shortcut is for: a deal's stage already answered by a call."""
    lead = LeadState("L1", 0)
    lead.append(Created(0.0, "c1", "r1", "web", "t", False, None))
    lead.append(Attempt(1.0, "a1", "r1", "call", True, None))
    lead.append(StageMove(2.0, "s1", "r1", SETTINGS.stages[1], None, None, None))
    lead.append(Attempt(3.0, "a2", "r1", "call", False, None))
    assert DERIVER.affects(lead, Attempt(4.0, "a3", "r1", "call", False, None)) == 0
    # the first activity after an entry does change that stage's response time
    lead.append(StageMove(5.0, "s2", "r1", SETTINGS.stages[2], None, None, None))
    assert DERIVER.affects(lead, Attempt(6.0, "a4", "r1", "call", False, None)) == PIPELINE
