"""Lead state: events deduplicated by id without a stored id set; labels interned; packed
between batches as its changelog bytes."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings

from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.engine.engine import Engine, RawMessage
from streamproc.engine.lead import Attempt, Created, LeadState, Open, StageMove
from tests.support.leads import leads


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


def test_a_packed_lead_is_its_changelog_bytes_and_reads_the_same() -> None:
    lead = LeadState("L1", 3, first_seen=5.0)
    lead.add(Created(1.0, "e1", "r1", "web", "t", False, 900.0))
    lead.add(Attempt(4.0, "e2", "r2", "email", False, "m1"))
    open_bytes = lead.dumps()
    lead.pack()
    assert lead.packed and lead.dumps() == open_bytes
    assert lead.last_ts == 4.0 and lead.first_attempt() == Attempt(
        4.0, "e2", "r2", "email", False, "m1"
    )
    assert not lead.packed, "reading unpacks until the owner packs again"
    lead.pack()
    with lead.reading():
        assert lead.owner == "r1" and lead.source == "web"
    assert lead.packed, "a look from outside the batches leaves it packed"
    lead.remember_alert("a1")
    assert lead.alerts == {"a1"} and lead.dumps() != open_bytes, "a change re-encodes"
    back = LeadState.loads(lead.dumps())
    assert back.packed and (back.lead_id, back.partition, back.first_seen) == ("L1", 3, 5.0)
    assert back.ids == {"e1", "e2"} and back.alerts == {"a1"} and back.last_ts == 4.0


def test_the_engine_leaves_unchanged_leads_packed() -> None:
    engine = Engine(Settings(_env_file=None, partitions=1), {})
    now = 1_800_000_000.0
    event = {
        "event_id": "a1",
        "lead_id": "L1",
        "occurred_at": "2027-01-15T08:00:00+00:00",
        "rep_id": "r1",
        "channel": "call",
        "connected": False,
    }
    message = RawMessage(
        EventKind("contact-attempted"), "t", 0, 0, b"L1", orjson.dumps(event), None
    )
    [lead] = engine.process([message], now).changed
    lead.pack()
    again = engine.process([message._replace(offset=1)], now)
    assert again.changed == [] and again.outcomes == {("t", "duplicate"): 1}
    assert lead.packed, "a duplicate leaves the lead as it found it"


@settings(max_examples=100, deadline=None)
@given(leads())
def test_an_undecoded_lead_reads_as_the_decoded_one(lead: LeadState) -> None:
    """Recovered undecoded (its changelog bytes only), a lead has every field and event of
    the same lead decoded at once, and is decoded only when first read."""
    changelog = lead.dumps()
    decoded = LeadState.loads(changelog)
    undecoded = LeadState.undecoded(lead.lead_id, lead.partition, changelog)
    assert undecoded.dumps() is changelog and undecoded._undecoded, "written back as it came"
    assert undecoded.packed
    assert undecoded.last_ts == decoded.last_ts == lead.last_ts
    assert not undecoded._undecoded and undecoded.packed, "decoded, still packed"
    for reading in (decoded, undecoded):
        assert reading.first_seen == lead.first_seen and reading.alerts == lead.alerts
        assert (reading.lead_id, reading.partition) == (lead.lead_id, lead.partition)
        assert (reading.created, reading.attempts) == (lead.created, lead.attempts)
        assert (reading.stages, reading.opens) == (lead.stages, lead.opens)
        assert reading.dumps() == changelog


def test_an_undecoded_lead_changes_as_a_decoded_one() -> None:
    lead = LeadState("L1", 2, first_seen=7.0)
    lead.add(Created(1.0, "e1", "r1", "web", "t", False, None))
    for first_read in (
        lambda lead: lead.remember_alert("a1"),  # the alert round
        lambda lead: lead.add(Attempt(3.0, "e2", "r1", "call", True, None)),  # a batch
        lambda lead: lead.alerts,
    ):
        undecoded = LeadState.undecoded("L1", 2, lead.dumps())
        first_read(undecoded)
        decoded = LeadState.loads(lead.dumps())
        first_read(decoded)
        assert undecoded.dumps() == decoded.dumps() and undecoded.last_ts == decoded.last_ts
        assert undecoded.alerts == decoded.alerts and undecoded.first_seen == 7.0


def test_a_leads_bytes_are_its_items_as_json_arrays() -> None:
    lead = LeadState("L1", 2, first_seen=7.0)
    lead.add(Created(1.0, "c1", "r1", "web", "t", True, 900.0, "acme", "enterprise"))
    lead.add(Attempt(2.0, "a1", "r1", "email", True, "m1"))
    lead.add(StageMove(3.0, "s1", "r1", "won", 1000.0, 1.0, None, ("p1", "p2")))
    lead.add(Open(4.0, "o1", "m1", True))
    lead.remember_alert("x1")
    items = (lead.created, lead.attempts, lead.stages, lead.opens)
    expected = {"t": 4.0, "l": "L1", "p": 2}
    expected.update(
        {key: [tuple(x) for x in group] for key, group in zip("caso", items, strict=True)}
    )
    expected.update({"f": 7.0, "x": ["x1"]})
    assert lead.dumps() == orjson.dumps(expected)


def test_a_value_that_is_no_event_item_is_not_written_as_an_array() -> None:
    lead = LeadState("L1", 0)
    lead.add(Attempt(2.0, "a1", "r1", "call", True, None))
    lead.attempts.append({"not", "an item"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        lead.dumps()


def test_a_changelog_written_before_the_business_fields_reads_with_their_defaults() -> None:
    raw = orjson.dumps(
        {
            "l": "L1",
            "p": 0,
            "c": [[1.0, "c1", "r1", "web", "t", False, None]],
            "a": [[2.0, "a1", "r1", "call", True, None]],
            "s": [[3.0, "s1", "r1", "qualified", None, None, None]],
            "o": [],
        }
    )
    lead = LeadState.loads(raw)
    created, move = lead.created[0], lead.stages[0]
    assert (created.customer, created.segment) == (None, "default")
    assert move.products is None and move.to_stage == "qualified"
    assert lead.attempts == [Attempt(2.0, "a1", "r1", "call", True, None)]


def test_a_won_moves_products_read_back_as_a_tuple() -> None:
    lead = LeadState("L1", 0)
    lead.add(StageMove(3.0, "s1", "r1", "won", 10.0, None, None, ("p1", "p2")))
    back = LeadState.loads(lead.dumps())
    assert back.stages == [StageMove(3.0, "s1", "r1", "won", 10.0, None, None, ("p1", "p2"))]
    assert type(back.stages[0].products) is tuple
