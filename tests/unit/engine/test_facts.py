"""The deriver's shortcut: an event re-derives only the groups of facts it can change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import Settings
from streamproc.engine.facts import EMAIL, PIPELINE, SPEED, Fact, FactDeriver
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


def _won_twice(second_value: float | None) -> LeadState:
    """Won at 100 (value 1000, by r1), then a second won event at 200 (won to won, by r2)."""
    lead = LeadState("L1", 0)
    lead.append(Created(0.0, "c1", "r1", "web", "t", False, None, None, "smb"))
    lead.append(StageMove(200.0, "s2", "r2", "won", second_value, None, None, ("b",)))
    lead.append(StageMove(100.0, "s1", "r1", "won", 1000.0, None, None, ("a",)))  # sent later
    return lead


_WON_FAMILIES = {"won", "won_src", "won_value", "won_new", "team_won_new", "won_ch"}


def _won_facts(lead: LeadState) -> list[Fact]:
    wanted = _WON_FAMILIES | {"segment_revenue"}
    return sorted(f for f in DERIVER.facts(lead, PIPELINE) if f[0] in wanted)


def test_a_second_won_event_of_a_won_deal_is_no_second_win() -> None:
    """A deal is won once: at its first won move, by that move's rep; a later won event
    updates it (its value if it gives one, its products) and lands nowhere of its own."""
    assert _won_facts(_won_twice(None)) == [
        ("segment_revenue", ("smb",), 100.0, 1000.0),
        ("team_won_new", (), 100.0, 1.0),
        ("won", ("r1", "web"), 100.0, 1.0),
        ("won_ch", ("none",), 100.0, 1.0),
        ("won_new", ("r1", "web"), 100.0, 1.0),
        ("won_src", ("web",), 100.0, 1.0),
        ("won_value", ("r1",), 100.0, 1000.0),
    ]


def test_the_value_of_a_deal_won_again_is_the_last_one_given() -> None:
    """``deal_value``: the last one given stands, and counts at the win."""
    values = [f for f in _won_facts(_won_twice(1500.0)) if f[0] in ("won_value", "segment_revenue")]
    assert values == [
        ("segment_revenue", ("smb",), 100.0, 1500.0),
        ("won_value", ("r1",), 100.0, 1500.0),
    ]
    products = [f for f in DERIVER.facts(_won_twice(None), PIPELINE) if f[0] == "product_win"]
    assert products == [("product_win", ("b",), 100.0, 1.0)]  # the last list, at the win


def test_a_second_lost_event_of_a_lost_deal_is_no_second_loss() -> None:
    """Lost to lost restates the loss (its reason, if it gives one), as won to won does;
    a deal reopened and lost again is lost twice."""
    lead = LeadState("L2", 0)
    lead.append(Created(0.0, "c1", "r1", "web", "t", False, None, None, "smb"))
    lead.append(StageMove(100.0, "s1", "r1", "lost", None, None, None))
    lead.append(StageMove(200.0, "s2", "r2", "lost", None, None, "price"))
    lost = [f for f in DERIVER.facts(lead, PIPELINE) if f[0] in ("lost", "lost_src")]
    assert sorted(lost) == [
        ("lost", ("r1", "price"), 100.0, 1.0),
        ("lost_src", ("web",), 100.0, 1.0),
    ]
    lead.append(StageMove(300.0, "s3", "r1", "qualified", None, None, None))
    lead.append(StageMove(400.0, "s4", "r1", "lost", None, None, "timing"))
    lost = [f for f in DERIVER.facts(lead, PIPELINE) if f[0] == "lost"]
    assert sorted(lost) == [
        ("lost", ("r1", "price"), 100.0, 1.0),
        ("lost", ("r1", "timing"), 400.0, 1.0),
    ]
