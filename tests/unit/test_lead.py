"""Lead state: events deduplicated by id without a stored id set; labels interned."""

from __future__ import annotations

import orjson

from streamproc.config import Settings
from streamproc.engine import Engine, RawMessage
from streamproc.events import EventKind
from streamproc.lead import Attempt, Created, LeadState


def test_an_event_id_is_applied_once_and_survives_the_changelog() -> None:
    lead = LeadState("L1", 0)
    assert lead.add(Created(1.0, "e1", "r1", "web", "t", False, None))
    assert lead.add(Attempt(2.0, "e2", "r1", "call", True, None))
    assert not lead.add(Attempt(2.0, "e2", "r1", "call", True, None))
    assert not lead.add(Created(1.0, "e1", "r1", "web", "t", False, None))
    assert lead.ids == {"e1", "e2"} and len(lead.attempts) == 1
    back = LeadState.loads(lead.dumps())
    assert back.has("e1") and back.has("e2") and not back.has("e3")
    assert not back.add(Attempt(2.0, "e2", "r1", "call", True, None))


def test_labels_of_kept_events_are_shared_strings() -> None:
    engine = Engine(Settings(_env_file=None, partitions=1), {})
    now = 1_800_000_000.0
    messages = []
    for i in range(2):
        event = {
            "event_id": f"a{i}",
            "lead_id": f"L{i}",
            "occurred_at": "2027-01-15T08:00:00+00:00",
            "rep_id": "".join(["rep", "-7"]),
            "channel": "call",
            "connected": False,
        }
        value = orjson.dumps(event)
        kind = EventKind("contact-attempted")
        messages.append(RawMessage(kind, "t", 0, i, f"L{i}".encode(), value, None))
    engine.process(messages, now)
    first, second = engine.leads["L0"].attempts[0], engine.leads["L1"].attempts[0]
    assert first.rep == second.rep == "rep-7"
    assert first.rep is second.rep and first.channel is second.channel
