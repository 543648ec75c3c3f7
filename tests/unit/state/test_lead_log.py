"""The leads' changelog read back: leads kept undecoded under their ids, dead-letter marks
collected, tombstones dropped."""

from __future__ import annotations

from streamproc.engine.lead import Created, LeadState
from streamproc.engine.lead_store import MemoryLeads
from streamproc.state.lead_log import DEAD_MARK, decode_recovered


def _lead(lead_id: str, partition: int) -> LeadState:
    lead = LeadState(lead_id, partition, first_seen=2.0)
    lead.add(Created(1.0, f"{lead_id}-c", "r1", "web", "t1", False, None))
    return lead


def test_recovered_leads_are_kept_undecoded_when_their_partition_is_known() -> None:
    known, unknown = _lead("L1", 3), _lead("L2", 1)
    store = MemoryLeads(
        {
            b"L1": known.dumps(),
            b"L2": unknown.dumps(),
            b"L3": None,  # an evicted lead's tombstone
            DEAD_MARK + b"sales.lead-created:1:42": b"1",
        }
    )
    marks = decode_recovered(store, {b"L1": 3}.get)
    assert marks == {("sales.lead-created", 1, 42)}
    assert set(store) == {"L1", "L2"}
    assert store["L1"]._undecoded and not store["L2"]._undecoded
    for lead, back in ((known, store["L1"]), (unknown, store["L2"])):
        assert (back.lead_id, back.partition, back.dumps()) == (
            lead.lead_id,
            lead.partition,
            lead.dumps(),
        )
        assert back.created == lead.created and back.first_seen == 2.0
    assert decode_recovered(store) == set() and set(store) == {"L1", "L2"}  # decoded once
