"""Lead states drawn by Hypothesis: created or not (twice, late), contacted or not, moved to
open or closed stages, with alerts remembered; all around ``T0``."""

from __future__ import annotations

from hypothesis import strategies as st

from streamproc.contract.outputs import Alert
from streamproc.engine.lead import Attempt, Created, LeadState, Open, StageMove
from streamproc.engine.sla_watch import BREACHED

T0 = 1_800_000_000.0
_ts = st.floats(T0 - 3600, T0 + 3600, allow_nan=False).map(lambda t: round(t, 3))
_source = st.sampled_from(["web", "vip", "referral"])


@st.composite
def leads(draw: st.DrawFn, lead_id: str = "L1", partition: int = 0) -> LeadState:
    lead = LeadState(lead_id, partition, first_seen=draw(_ts))
    for i in range(draw(st.integers(0, 2))):
        source = draw(_source)
        lead.add(Created(draw(_ts), f"{lead_id}-c{i}", "r1", source, "t1", False, None))
    for i in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # most still waiting
        lead.add(Attempt(draw(_ts), f"{lead_id}-a{i}", "r2", "call", draw(st.booleans()), None))
    for i in range(draw(st.sampled_from([0, 0, 1, 2]))):
        stage = draw(st.sampled_from(["qualified", "won", "lost"]))
        value = 100.0 if stage == "won" else None
        products = ("p1",) if stage == "won" else None
        move = StageMove(draw(_ts), f"{lead_id}-s{i}", "r1", stage, value, None, None, products)
        lead.add(move)
    if draw(st.booleans()):
        lead.add(Open(draw(_ts), f"{lead_id}-o", "m1", draw(st.booleans())))
    for level in draw(st.sets(st.sampled_from([1, 2]))):
        lead.remember_alert(Alert.make_id(BREACHED, level, lead_id))
    return lead
