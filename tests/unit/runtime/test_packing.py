"""Packed bytes: plain until the dictionary is learnt, then compressed; always read back."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import streamproc.engine.lead
from streamproc.engine.lead import Attempt, Created, LeadState
from streamproc.runtime.packing import Packer


def _lead_json(i: int) -> bytes:
    events = [
        [1_800_000_000.0 + i + n, f"lead-{i:07d}.{n}", "rep-7", "call", False, None]
        for n in range(8)
    ]
    return orjson.dumps({"l": f"lead-{i:07d}", "p": i % 4, "a": events, "x": []})


def test_plain_until_trained_then_compressed_and_read_back() -> None:
    packer = Packer(samples=100)
    before = [packer.pack(_lead_json(i)) for i in range(100)]
    assert before == [_lead_json(i) for i in range(100)], "kept as they are while learning"
    assert packer.trained
    after = {i: packer.pack(_lead_json(i)) for i in range(100, 300)}
    for i, kept in after.items():
        assert packer.unpack(kept) == _lead_json(i)
        assert len(kept) * 3 < len(_lead_json(i))
    assert all(packer.unpack(kept) == _lead_json(i) for i, kept in enumerate(before))


def test_without_a_dictionary_when_none_can_be_learnt(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise zstandard.ZstdError("nothing to learn")

    monkeypatch.setattr(zstandard, "train_dictionary", refuse)
    packer = Packer(samples=10)
    kept = [packer.pack(_lead_json(i)) for i in range(40)]
    assert packer.trained, "gives up learning after 4x the samples and compresses anyway"
    later = packer.pack(_lead_json(99))
    assert later != _lead_json(99) and packer.unpack(later) == _lead_json(99)
    assert [packer.unpack(k) for k in kept] == [_lead_json(i) for i in range(40)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=20))
def test_any_json_object_reads_back(ids: list[str]) -> None:
    packer = Packer(samples=100)
    for i in range(100):
        packer.pack(_lead_json(i))
    raw = orjson.dumps({"l": "x", "ids": ids})
    assert packer.unpack(packer.pack(raw)) == raw


def test_leads_packed_compressed_read_and_change_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streamproc.engine.lead, "PACKER", Packer(samples=50))
    leads = []
    for i in range(120):
        lead = LeadState(f"lead-{i:07d}", i % 4, first_seen=5.0)
        lead.add(Created(1.0, f"lead-{i:07d}.0", "rep-1", "web", "team-a", False, 900.0))
        lead.add(Attempt(4.0, f"lead-{i:07d}.1", "rep-1", "email", False, f"lead-{i:07d}.m1"))
        leads.append((lead, lead.dumps()))
        lead.pack()
    assert streamproc.engine.lead.PACKER.trained
    last, changelog = leads[-1]
    assert len(last._kept or b"") * 2 < len(changelog), "kept compressed once trained"
    for lead, changelog in leads:
        assert lead.packed and lead.dumps() == changelog
        back = LeadState.loads(changelog)
        assert back.packed and back.dumps() == changelog and back.last_ts == 4.0
    lead, changelog = leads[-1]
    assert lead.owner == "rep-1" and not lead.packed
    assert lead.add(Attempt(9.0, "lead-0000119.2", "rep-1", "call", True, None))
    lead.pack()
    assert lead.packed and lead.dumps() != changelog
    assert LeadState.loads(lead.dumps()).ids == {f"lead-0000119.{n}" for n in range(3)}


def test_kept_bytes_hold_no_more_memory_than_their_length() -> None:
    packer = Packer(samples=100)
    for i in range(100):
        packer.pack(_lead_json(i))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [packer.pack(_lead_json(i)) for i in range(1000, 2000)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    lengths = sum(len(k) for k in kept)
    # each bytes object: its length plus a 33-byte header; the list: 8 bytes an item
    assert held < 1.3 * (lengths + 41 * len(kept)), (held, lengths)
