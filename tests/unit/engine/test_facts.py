"""The deriver's shortcut: an event re-derives only the groups of facts it can change."""

from __future__ import annotations

from datetime import UTC, datetime, time
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.business_hours import BusinessHours, SlaClock
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


def test_a_first_contact_is_within_the_sla_on_the_alerts_clock() -> None:
    """Business hours: a lead created Friday 16:58 and called Monday 09:02 was answered
    within its 5 minutes of open time (no breach alerted), three days after it came."""
    hours = BusinessHours(days="mon-fri", open=time(9), close=time(17), timezone="UTC")
    deriver = FactDeriver(SETTINGS, due=SlaClock({"*": hours}).due)
    created = datetime(2026, 12, 4, 16, 58, tzinfo=UTC).timestamp()  # a Friday
    for called, within in (
        (datetime(2026, 12, 7, 9, 2, tzinfo=UTC), True),
        (datetime(2026, 12, 7, 9, 4, tzinfo=UTC), False),
    ):
        lead = LeadState("L1", 0)
        lead.append(Created(created, "c1", "r1", "web", "t", False, None, None, "smb"))
        lead.append(Attempt(called.timestamp(), "a1", "r1", "call", True, None))
        families = [f[0] for f in deriver.facts(lead, SPEED)]
        assert ("first_contact_in_sla" in families) is within
        wall_clock = [f[0] for f in DERIVER.facts(lead, SPEED)]
        assert "first_contact_in_sla" not in wall_clock  # three days late on the wall clock


_WON_FAMILIES = {"won", "won_src", "won_value", "won_new", "team_won_new", "won_ch"}


def _won_facts(lead: LeadState) -> list[Fact]:
    return sorted(f for f in DERIVER.facts(lead, PIPELINE) if f[0] in _WON_FAMILIES)


def test_a_second_won_event_of_a_won_deal_is_no_second_win() -> None:
    """A deal is won once: at its first won move, by that move's rep; a later won event
    updates it (its value if it gives one, its products) and lands nowhere of its own."""
    assert _won_facts(_won_twice(None)) == [
        ("team_won_new", (), 100.0, 1.0),
        ("won", ("r1", "web"), 100.0, 1.0),
        ("won_ch", ("none",), 100.0, 1.0),
        ("won_new", ("r1", "web"), 100.0, 1.0),
        ("won_src", ("web",), 100.0, 1.0),
        ("won_value", ("r1",), 100.0, 1000.0),
    ]


def test_the_value_of_a_deal_won_again_is_the_last_one_given() -> None:
    """``deal_value``: the last one given stands, and counts at the win."""
    values = [f for f in _won_facts(_won_twice(1500.0)) if f[0] == "won_value"]
    assert values == [("won_value", ("r1",), 100.0, 1500.0)]
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


_STAGE_FAMILIES = ("stage_entry", "stage_exit", "stage_forward", "stage_response")


def _stage_facts(lead: LeadState) -> list[Fact]:
    return sorted(f for f in DERIVER.all_facts(lead) if f[0] in _STAGE_FAMILIES)


def _lead_of(items: list[Created | Attempt | StageMove]) -> LeadState:
    lead = LeadState("L3", 0)
    for item in items:
        lead.append(item)
    return lead


# A deal in proposal at 100, moved to proposal again at 150 (a value given), to negotiation
# at 400, lost at 500 and lost again at 600 (another reason), then back to proposal at 700.
_RESTATED = [
    Created(0.0, "c1", "r1", "web", "t", False, None),
    StageMove(100.0, "s1", "r1", "proposal", None, None, None),
    StageMove(150.0, "s2", "r2", "proposal", 800.0, None, None),
    StageMove(400.0, "s3", "r1", "negotiation", None, None, None),
    StageMove(500.0, "s4", "r1", "lost", None, None, "price"),
    StageMove(600.0, "s5", "r2", "lost", None, None, "timing"),
    StageMove(700.0, "s6", "r1", "proposal", None, None, None),
]


def test_a_move_to_the_stage_a_deal_is_in_is_no_entry_exit_or_activity() -> None:
    """proposal to proposal and lost to lost restate the stage: the deal entered proposal at
    100 and left it at 400 (300 s, forward); the second move is no entry, no exit of
    proposal at 150 and not the activity that answers the entry. Back in proposal at 700
    it enters it again."""
    want = [
        ("stage_entry", ("lost",), 500.0, 1.0),
        ("stage_entry", ("negotiation",), 400.0, 1.0),
        ("stage_entry", ("proposal",), 100.0, 1.0),
        ("stage_entry", ("proposal",), 700.0, 1.0),
        ("stage_exit", ("lost",), 700.0, 200.0),  # reopened: lost from 500
        ("stage_exit", ("negotiation",), 500.0, 100.0),
        ("stage_exit", ("proposal",), 400.0, 300.0),
        ("stage_forward", ("proposal",), 400.0, 1.0),
        ("stage_response", ("negotiation",), 500.0, 100.0),
        ("stage_response", ("proposal",), 400.0, 300.0),
    ]
    assert _stage_facts(_lead_of(_RESTATED)) == want
    assert _stage_facts(_lead_of(_RESTATED[::-1])) == want  # any order
    lost = [f for f in DERIVER.facts(_lead_of(_RESTATED), PIPELINE) if f[0] == "lost"]
    assert lost == [("lost", ("r1", "timing"), 500.0, 1.0)]
    value = [f for f in DERIVER.facts(_lead_of(_RESTATED), PIPELINE) if f[0] == "pipeline_value"]
    assert value == [("pipeline_value", ("r1", "proposal"), None, 800.0)]  # the restated value


def test_a_second_won_event_of_a_won_deal_is_no_second_entry_into_won() -> None:
    """Won to won: one entry into won, at the first won move, and no exit of won (which
    made a conversion ratio of 0 for the won stage)."""
    assert _stage_facts(_won_twice(None)) == [("stage_entry", ("won",), 100.0, 1.0)]
    lead = _won_twice(None)
    lead.append(StageMove(50.0, "s0", "r1", "negotiation", None, None, None))
    assert _stage_facts(lead) == [
        ("stage_entry", ("negotiation",), 50.0, 1.0),
        ("stage_entry", ("won",), 100.0, 1.0),
        ("stage_exit", ("negotiation",), 100.0, 50.0),
        ("stage_forward", ("negotiation",), 100.0, 1.0),
        ("stage_response", ("negotiation",), 100.0, 50.0),
    ]


def test_a_late_move_between_two_to_one_stage_makes_the_second_an_entry() -> None:
    """Entries are re-derived, not counted per event: proposal at 100 and 300 is one entry
    until a move to qualified at 200 arrives, then the deal went back and came again."""
    lead = _lead_of([*_RESTATED[:2], StageMove(300.0, "s7", "r1", "proposal", None, None, None)])
    entries = [f for f in _stage_facts(lead) if f[0] == "stage_entry"]
    assert entries == [("stage_entry", ("proposal",), 100.0, 1.0)]
    lead.append(StageMove(200.0, "s8", "r1", "qualified", None, None, None))
    assert _stage_facts(lead) == [
        ("stage_entry", ("proposal",), 100.0, 1.0),
        ("stage_entry", ("proposal",), 300.0, 1.0),
        ("stage_entry", ("qualified",), 200.0, 1.0),
        ("stage_exit", ("proposal",), 200.0, 100.0),
        ("stage_exit", ("qualified",), 300.0, 100.0),
        ("stage_forward", ("qualified",), 300.0, 1.0),
        ("stage_response", ("proposal",), 200.0, 100.0),
        ("stage_response", ("qualified",), 300.0, 100.0),
    ]


def test_an_attempt_after_a_restated_stage_answers_its_entry() -> None:
    """The restatement is no activity: the first attempt after it is the entry's response,
    so the shortcut re-derives the pipeline for it (ties: proposal and won at 5 by id, won
    restated at 6, the attempt at 7 answers proposal's entry)."""
    lead = _lead_of(
        [
            Created(0.0, "c1", "r1", "web", "t", False, None),
            StageMove(5.0, "s1", "r1", "proposal", None, None, None),
            StageMove(5.0, "s2", "r1", "won", None, None, None),
            StageMove(6.0, "s3", "r1", "won", None, None, None),
            Attempt(1.0, "a1", "r1", "call", False, None),
        ]
    )
    attempt = Attempt(7.0, "a2", "r1", "call", False, None)
    assert DERIVER.affects(lead, attempt) & PIPELINE
    lead.append(attempt)
    assert ("stage_response", ("proposal",), 7.0, 2.0) in DERIVER.facts(lead, PIPELINE)


# Few stages, so that moves to the stage a deal is in are common.
_repeated_move = st.builds(
    StageMove,
    ts=_ts,
    event_id=st.sampled_from([f"s{i}" for i in range(6)]),
    rep=st.just("r1"),
    to_stage=st.sampled_from(["qualified", "proposal", "won", "lost"]),
    deal_value=st.none(),
    probability=st.none(),
    lost_reason=st.none(),
)


@settings(max_examples=200, deadline=None)
@given(moves=st.lists(_repeated_move, max_size=8, unique_by=lambda m: m.event_id), data=st.data())
def test_a_deal_enters_and_leaves_a_stage_once_per_run_of_moves_to_it(
    moves: list[StageMove], data: st.DataObject
) -> None:
    """Stage facts by runs of one stage in event-time order, whatever the arrival order: one
    entry per run, one exit per run left."""
    history = sorted(moves)
    runs = [m for i, m in enumerate(history) if i == 0 or history[i - 1].to_stage != m.to_stage]
    facts = _stage_facts(_lead_of(data.draw(st.permutations(moves))))
    entries = [f for f in facts if f[0] == "stage_entry"]
    assert sorted(entries) == sorted(("stage_entry", (m.to_stage,), m.ts, 1.0) for m in runs)
    exits = sorted(f[1:] for f in facts if f[0] == "stage_exit")
    assert exits == sorted(((a.to_stage,), b.ts, b.ts - a.ts) for a, b in pairwise(runs))


def test_a_move_after_the_first_attempt_re_derives_the_pipeline_alone() -> None:
    lead = LeadState("L1", 0)
    lead.append(Created(1.0, "c1", "r1", "web", "t", False, None))
    move = StageMove(5.0, "s1", "r1", SETTINGS.won_stage, 500.0, None, None)
    assert DERIVER.affects(lead, move) == SPEED | PIPELINE, "closing it ends the wait"
    lead.append(Attempt(3.0, "a1", "r1", "call", True, None))
    assert DERIVER.affects(lead, move) == PIPELINE
