"""Publication of partial summaries: only what changed is recomputed and sent, and what the
owners end up with is what a full recomputation would send."""

from __future__ import annotations

import gc
import itertools
import math
import threading
import tracemalloc
import zlib

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.engine.aggregates import Acc, PartitionAggregates
from streamproc.engine.engine import Engine, RawMessage
from streamproc.engine.facts import Fact
from streamproc.engine.windows import HOUR, MINUTE, WindowClock
from streamproc.kpis.compute import Summary, merge_summaries, summaries
from streamproc.partials import codec as partials
from streamproc.partials import publisher as publisher_module
from streamproc.partials.codec import (
    SWEEP,
    decode,
    encode,
    message_key,
    owner_of,
    owner_partition,
)
from streamproc.partials.owner import PartialsInbox, PartialsView
from streamproc.partials.publisher import FullRounds, PartialsPublisher
from streamproc.runtime.slices import at_once
from tests.support.facts import fact
from tests.support.scenario import Scenario, noon_zone

SCENARIO = Scenario()
SETTINGS = Settings(_env_file=None, timezone=noon_zone(SCENARIO.now), partitions=4)
NOW = SCENARIO.now + 1


def _messages() -> list[RawMessage]:
    out = []
    for offset, (kind, event) in enumerate(SCENARIO.events):
        key = event["lead_id"].encode()
        partition = zlib.crc32(key) % 4
        value = orjson.dumps(event)
        out.append(
            RawMessage(EventKind(kind), "sales." + kind, partition, offset, key, value, None)
        )
    return out


def _run_round(
    publisher: PartialsPublisher,
    parts: dict[int, PartitionAggregates],
    clock: WindowClock,
    now: float,
    table: dict[bytes, bytes],
    full: bool = False,
    inbox: PartialsInbox | None = None,
    budget: int | None = None,
) -> list[tuple[bytes, bytes]]:
    """One round into ``table`` through an owner's inbox; returns the summaries sent (the
    sweep markers left out)."""
    messages = [m for m in publisher.round(parts, clock, now, full, budget) if m is not None]
    inbox = inbox or PartialsInbox(publisher.partitions)
    inbox.apply(table, messages)
    return [(key, value) for key, value, _ in messages if not key.startswith(SWEEP)]


def _fresh(parts: dict[int, PartitionAggregates], clock: WindowClock, now: float) -> dict:  # type: ignore[type-arg]
    return {
        message_key(owner_key, partition): encode(summary)
        for partition, part in parts.items()
        for owner_key, summary in summaries(part, clock, now).items()
    }


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(list(range(len(SCENARIO.events)))),
    cuts=st.lists(st.integers(0, len(SCENARIO.events)), max_size=8),
    waits=st.lists(
        st.sampled_from([0, 1, 30, MINUTE, 59 * MINUTE, HOUR, 5 * HOUR, 20 * HOUR]), max_size=12
    ),
    prune=st.booleans(),
)
def test_rounds_leave_the_owners_what_a_full_recomputation_gives(
    order: list[int], cuts: list[int], waits: list[int], prune: bool
) -> None:
    messages = _messages()
    engine = Engine(SETTINGS, {})
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    now = NOW
    edges = sorted({0, len(order), *cuts})
    steps = [order[a:b] for a, b in itertools.pairwise(edges)]
    for i in range(max(len(steps), len(waits))):
        if i < len(steps):
            engine.process([messages[k] for k in steps[i]], now)
        if i < len(waits):
            now += waits[i]
        if prune:
            engine.prune(now)
        _run_round(publisher, engine.partitions, engine.clock, now, table)
        assert table == _fresh(engine.partitions, engine.clock, now)


def _part(*facts: Fact) -> PartitionAggregates:
    part = PartitionAggregates(WindowClock(SETTINGS.zone), NOW)
    part.apply(facts, 1)
    return part


def test_only_changed_owner_keys_are_recomputed_and_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    part = _part(
        fact("attempt", ("r1", "call"), NOW - 100, 1.0),
        fact("attempt", ("r2", "call"), NOW - 100, 1.0),
        fact("stage_entry", ("won",), NOW - 100, 1.0),
    )
    parts = {0: part}
    clock = part.clock
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    first = _run_round(publisher, parts, clock, NOW, table)
    assert {owner_of(k) for k, _ in first} == {"rep:r1", "rep:r2", "stage:won"}
    assert _run_round(publisher, parts, clock, NOW + 1, table) == []
    encoded: list[Summary] = []
    monkeypatch.setattr(publisher_module, "encode", lambda s: encoded.append(s) or encode(s))
    part.apply([fact("attempt", ("r2", "email"), NOW - 50, 1.0)], 1)
    again = _run_round(publisher, parts, clock, NOW + 2, table)
    assert [owner_of(k) for k, _ in again] == ["rep:r2"]
    assert [list(s["attempt"]) for s in encoded] == [[("r2", "call"), ("r2", "email")]]
    assert table == _fresh(parts, clock, NOW + 2)
    # a fact that leaves the summary as it was sends nothing
    part.apply([fact("attempt", ("r2", "email"), NOW - 50, 1.0)], -1)
    part.apply([fact("attempt", ("r2", "email"), NOW - 50, 1.0)], 1)
    assert _run_round(publisher, parts, clock, NOW + 3, table) == []


def test_a_budget_sends_the_oldest_changes_first_and_loses_none() -> None:
    reps = [f"r{i}" for i in range(6)]
    part = _part(*(fact("attempt", (rep, "call"), NOW - 100, 1.0) for rep in reps))
    parts = {0: part}
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, part.clock, NOW, table)
    size = len(table[message_key("rep:r0", 0)])  # each rep's summary is as large
    budget = 2 * size  # two summaries a round
    for rep in reps[:5]:
        part.apply([fact("attempt", (rep, "sms"), NOW - 50, 1.0)], 1)
    first = _run_round(publisher, parts, part.clock, NOW + 1, table, budget=budget)
    assert len(first) == 2
    part.apply([fact("attempt", ("r5", "sms"), NOW - 40, 1.0)], 1)  # a newer change
    second = _run_round(publisher, parts, part.clock, NOW + 2, table, budget=budget)
    third = _run_round(publisher, parts, part.clock, NOW + 3, table, budget=budget)
    sent = [[owner_of(k) for k, _ in r] for r in (first, second, third)]
    assert [len(r) for r in sent] == [2, 2, 2], sent
    assert "rep:r5" in sent[2], f"the newest change went before older ones: {sent}"
    assert sorted(itertools.chain.from_iterable(sent)) == [f"rep:{rep}" for rep in reps]
    assert table == _fresh(parts, part.clock, NOW + 3)
    assert _run_round(publisher, parts, part.clock, NOW + 4, table, budget=budget) == []
    # without a budget, what is pending goes at once
    for rep in reps[:3]:
        part.apply([fact("attempt", (rep, "sms"), NOW - 30, 1.0)], 1)
    assert len(_run_round(publisher, parts, part.clock, NOW + 5, table, budget=1)) == 1
    assert len(_run_round(publisher, parts, part.clock, NOW + 6, table)) == 2
    assert table == _fresh(parts, part.clock, NOW + 6)


def test_a_summary_larger_than_the_budget_still_goes() -> None:
    part = _part(fact("attempt", ("r1", "call"), NOW - 100, 1.0))
    parts = {0: part}
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, part.clock, NOW, table)
    part.apply([fact("attempt", ("r1", "sms"), NOW - 50, 1.0)], 1)
    sent = _run_round(publisher, parts, part.clock, NOW + 1, table, budget=1)
    assert [owner_of(k) for k, _ in sent] == ["rep:r1"]
    assert table == _fresh(parts, part.clock, NOW + 1)


def test_a_window_rolling_over_a_bucket_republishes_its_keys() -> None:
    part = _part(
        fact("attempt", ("r1", "call"), NOW - 59 * MINUTE, 1.0),
        fact("attempt", ("r2", "call"), NOW - 2 * HOUR, 1.0),
    )
    parts = {0: part}
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, part.clock, NOW, table)
    key = message_key("rep:r1", 0)
    assert "1h" in decode(table[key])["attempt"][("r1", "call")]
    later = NOW + 2 * MINUTE  # no new fact: only time moved
    sent = _run_round(publisher, parts, part.clock, later, table)
    assert [owner_of(k) for k, _ in sent] == ["rep:r1"]
    assert "1h" not in decode(table[key])["attempt"][("r1", "call")]
    assert table == _fresh(parts, part.clock, later)


def test_a_full_round_sends_everything_and_retracts_what_went() -> None:
    one = fact("attempt", ("r1", "call"), NOW - 100, 1.0)
    part = _part(one, fact("attempt", ("r2", "call"), NOW - 100, 1.0))
    parts = {0: part}
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, part.clock, NOW, table)
    part.apply([one], -1)  # r1 has nothing left on this partition
    sent = _run_round(publisher, parts, part.clock, NOW, table, full=True)
    assert sorted(sent) == sorted([(message_key("rep:r1", 0), b""), *table.items()])
    assert list(table) == [message_key("rep:r2", 0)]


def test_a_partition_that_moves_away_mid_round_is_not_published_further() -> None:
    parts = {
        0: _part(*(fact("attempt", (f"r{i}", "call"), NOW - 100, 1.0) for i in range(5))),
        1: _part(fact("attempt", ("r9", "call"), NOW - 100, 1.0)),
    }
    clock = parts[0].clock
    publisher = PartialsPublisher(4)
    round_ = publisher.round(parts, clock, NOW)
    while (first := next(round_)) is None or first[0].startswith(SWEEP):
        pass  # the sweep's begin markers: partition 0 is new here
    assert owner_of(first[0]) == "rep:r0"
    del parts[0]  # a rebalance took it while the loop ran other work
    rest = [m for m in round_ if m is not None]
    assert [owner_of(k) for k, _, _ in rest if not k.startswith(SWEEP)] == ["rep:r9"]
    # partition 0's sweep never ends: its new owner's first round sweeps
    ends = [(k, v) for k, v, _ in rest if v.startswith(b"end")]
    assert {k for k, _ in ends} == {SWEEP + b"1"}


def test_the_owner_view_merges_again_only_keys_whose_partials_changed() -> None:
    parts = {
        0: _part(fact("attempt", ("r1", "call"), NOW - 100, 1.0)),
        1: _part(
            fact("attempt", ("r1", "call"), NOW - 50, 1.0),
            fact("attempt", ("r2", "sms"), NOW - 50, 1.0),
        ),
    }
    clock = parts[0].clock
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, clock, NOW, table)
    view = PartialsView(1)
    first = view.merged(table, {0})
    owned = view.owned(table, {0})
    assert {k: encode(s) for k, s in first.items()} == {
        k: encode(merge_summaries(s)) for k, s in owned.items()
    }
    assert first["rep:r1"]["attempt"][("r1", "call")]["today"].count == 2
    parts[1].apply([fact("attempt", ("r2", "sms"), NOW - 40, 1.0)], 1)
    _run_round(publisher, parts, clock, NOW + 1, table)
    second = view.merged(table, {0})
    assert second["rep:r1"] is first["rep:r1"]  # its partials did not change
    assert second["rep:r2"]["attempt"][("r2", "sms")]["today"].count == 2
    del table[message_key("rep:r2", 1)]
    assert "rep:r2" not in view.merged(table, {0})  # its only partial was retracted
    # equal bytes read apart (a view merged ahead from a copy): not merged again, and the
    # view holds the table's bytes, not a second copy of them
    again = {key: bytes(bytearray(raw)) for key, raw in table.items()}
    assert view.merged(again, {0})["rep:r1"] is first["rep:r1"]
    held = {id(raw) for sources, _ in view._merged.values() for raw in sources}
    assert held <= {id(raw) for raw in again.values()}


def test_reading_the_owner_view_merges_nothing_until_the_next_refresh() -> None:
    """Scrapes and rounds read ``current``: what the partials route applied since the last
    refresh is merged by the next one, in steps, not by a read in one go."""
    parts = {0: _part(fact("attempt", ("r1", "call"), NOW - 100, 1.0))}
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, parts[0].clock, NOW, table)
    view = PartialsView(4)
    assert view.current({0, 1, 2, 3}) == {}, "nothing refreshed yet"
    list(view.refresh(table, {0, 1, 2, 3}))
    first = view.current({0, 1, 2, 3})
    assert first["rep:r1"]["attempt"][("r1", "call")]["today"].count == 1
    parts[0].apply([fact("attempt", ("r1", "call"), NOW - 50, 1.0)], 1)
    _run_round(publisher, parts, parts[0].clock, NOW + 1, table)
    assert view.current({0, 1, 2, 3})["rep:r1"] is first["rep:r1"], "not merged by a read"
    list(view.refresh(table, {0, 1, 2, 3}))
    assert view.current({0, 1, 2, 3})["rep:r1"]["attempt"][("r1", "call")]["today"].count == 2
    owner = owner_partition("rep:r1", 4)
    assert view.current({0, 1, 2, 3} - {owner}) == {}, "a key whose partition left is not read"


def test_a_partial_that_does_not_decode_is_left_out_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only workers write the partials topic; bytes that do not decode (a stranger's, a
    bug's) must not stop the owner's rounds: the key merges from its other partials."""
    parts = {0: _part(fact("attempt", ("r1", "call"), NOW - 100, 1.0))}
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, parts[0].clock, NOW, table)
    for junk in (b"not a summary", partials.FORMAT + b"\x00" * 9, b"{}", b"[1, 2]"):
        table[message_key("rep:r1", 1)] = junk
        with caplog.at_level("WARNING", logger="streamproc.partials.owner"):
            merged = PartialsView(4).merged(table, {0, 1, 2, 3})
        assert merged["rep:r1"]["attempt"][("r1", "call")]["today"].count == 1
    assert caplog.text.count("does not decode") == 3, "an empty summary ({}) decodes"


def test_messages_that_are_not_summaries_are_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox, table = PartialsInbox(4), {}
    good = message_key("rep:r1", 2)
    messages = [(b"junk", b"x", 0), (b"rep:r1\x00two", b"x", 0), (good, b"x", 1)]
    with caplog.at_level("WARNING", logger="streamproc.partials.owner"):
        writes = inbox.apply(table, [*messages, (SWEEP + b"x", b"begin t", 0)])
    assert table == {good: b"x"} and writes == {(good, 1): b"x"}
    assert caplog.text.count("not a summary") == 3


def test_the_owner_view_refreshes_a_partial_or_a_key_at_a_time() -> None:
    """Each decode and each merge is a point where the publish round lets events run."""
    parts = {p: _part(fact("attempt", (f"r{p}", "call"), NOW - 100, 1.0)) for p in range(3)}
    parts[0].apply([fact("attempt", ("r1", "call"), NOW - 90, 1.0)], 1)
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, parts[0].clock, NOW, table)
    view = PartialsView(1)
    steps = list(view.refresh(table, {0}))
    assert len(steps) == len(table) + 3  # 4 partials decoded, 3 series (one a key) merged
    assert list(view.refresh(table, {0})) == []  # nothing changed: nothing to do
    assert sorted(view.merged(table, {0})) == ["rep:r0", "rep:r1", "rep:r2"]


def test_a_new_owner_of_a_partition_drops_what_the_last_one_left_behind() -> None:
    """Killed before its next round, the last owner left a summary under a key that the
    partition no longer feeds (a lead's loss counted under source ``unknown`` until its
    late lead-created came): the new owner's first round sweeps it away."""
    attempt = fact("attempt", ("r1", "call"), NOW - 100, 1.0)
    old = {0: _part(fact("lost_src", ("unknown",), NOW - 100, 1.0), attempt)}
    table: dict[bytes, bytes] = {}
    inbox = PartialsInbox(4)  # the owner side, alive throughout
    _run_round(PartialsPublisher(4), old, old[0].clock, NOW, table, inbox=inbox)
    assert message_key("source:unknown", 0) in table
    # the new owner recovered the lead whole: its loss belongs to a known source now
    new = {0: _part(fact("lost_src", ("web",), NOW - 100, 1.0), attempt)}
    publisher = PartialsPublisher(4)
    _run_round(publisher, new, new[0].clock, NOW + 1, table, inbox=inbox)
    assert table == _fresh(new, new[0].clock, NOW + 1)
    # later rounds are no sweeps: nothing changed, nothing sent
    assert _run_round(publisher, new, new[0].clock, NOW + 2, table, inbox=inbox) == []


def test_a_sweep_whose_begin_another_owner_saw_deletes_nothing() -> None:
    parts = {0: _part(fact("attempt", ("r1", "call"), NOW - 100, 1.0))}
    clock = parts[0].clock
    table = {message_key("rep:r9", 0): b"{}"}  # left by an earlier owner of partition 0
    messages = [m for m in PartialsPublisher(4).round(parts, clock, NOW) if m is not None]
    begins = [m for m in messages if m[1].startswith(b"begin")]
    assert len(begins) == 4  # one on every partition of the topic
    inbox = PartialsInbox(4)
    inbox.apply(table, messages[:4])
    inbox.reset()  # a rebalance in between: the rest may not be all this owner gets
    writes = inbox.apply(table, messages[4:])
    assert message_key("rep:r9", 0) in table
    assert all(value is not None for value in writes.values())
    # the next full round sweeps it
    again = [m for m in PartialsPublisher(4).round(parts, clock, NOW, full=True) if m]
    writes = inbox.apply(table, again)
    r9 = message_key("rep:r9", 0)
    assert r9 not in table and writes[(r9, partials.owner_partition("rep:r9", 4))] is None


def test_a_batch_applied_between_the_steps_of_a_round_is_published_by_the_next() -> None:
    part = _part(*(fact("attempt", (f"r{i}", "call"), NOW - 100, 1.0) for i in range(5)))
    parts = {0: part}
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    inbox = PartialsInbox(4)
    round_ = publisher.round(parts, part.clock, NOW)
    first = [next(round_) for _ in range(2)]  # two of the five series summed up
    part.apply([fact("attempt", ("r9", "sms"), NOW - 50, 1.0)], 1)  # a new series meanwhile
    inbox.apply(table, [m for m in [*first, *round_] if m is not None])
    _run_round(publisher, parts, part.clock, NOW + 1, table, inbox=inbox)
    assert table == _fresh(parts, part.clock, NOW + 1)


def test_the_owner_writes_only_what_changes_its_table() -> None:
    """A full round re-sends every summary: those the owner holds already are not written to
    its changelog again; a changed one, a retraction and a value it lacks are."""
    parts = {0: _part(*(fact("attempt", (f"r{i}", "call"), NOW - 100, 1.0) for i in range(3)))}
    clock = parts[0].clock
    publisher = PartialsPublisher(4)
    inbox = PartialsInbox(4)
    table: dict[bytes, bytes] = {}
    first = [m for m in publisher.round(parts, clock, NOW) if m is not None]
    writes = inbox.apply(table, first)
    assert {key for key, _ in writes} == set(table) and len(table) == 3
    parts[0].apply([fact("attempt", ("r1", "sms"), NOW - 50, 1.0)], 1)
    parts[0].apply([fact("attempt", ("r2", "call"), NOW - 100, 1.0)], -1)  # r2 has nothing
    lost = message_key("rep:r0", 0)
    del table[lost]  # as if the owner's recovery had missed it
    full = [m for m in publisher.round(parts, clock, NOW + 1, full=True) if m is not None]
    assert len([m for m in full if not m[0].startswith(SWEEP)]) == 3  # r0, r1, r2 retracted
    writes = inbox.apply(table, full)
    assert writes == {
        (lost, owner_partition("rep:r0", 4)): table[lost],
        (message_key("rep:r1", 0), owner_partition("rep:r1", 4)): table[message_key("rep:r1", 0)],
        (message_key("rep:r2", 0), owner_partition("rep:r2", 4)): None,
    }
    assert table == _fresh(parts, clock, NOW + 1)
    again = [m for m in publisher.round(parts, clock, NOW + 2, full=True) if m is not None]
    assert inbox.apply(table, again) == {}


def test_what_a_failed_changelog_write_left_unwritten_is_written_when_read_again() -> None:
    parts = {0: _part(fact("attempt", ("r1", "call"), NOW - 100, 1.0))}
    messages = [m for m in PartialsPublisher(4).round(parts, parts[0].clock, NOW) if m]
    inbox = PartialsInbox(4)
    table: dict[bytes, bytes] = {}
    writes = inbox.apply(table, messages)
    assert writes
    inbox.unwritten(table, writes)  # the write failed: the batch is read again
    assert inbox.apply(table, messages) == writes


def test_the_owner_view_keeps_merged_values_compact_and_no_decoded_partials() -> None:
    """At 100 reps and 100,000 leads the decoded partials and the merged value dicts held
    ~47 MiB: the view keeps its merged summaries only, their values in arrays."""
    parts = {
        p: _part(*(fact("first_contact", ("r1",), NOW - 100, p + i / 7) for i in range(3000)))
        for p in range(2)
    }
    publisher = PartialsPublisher(4)
    table: dict[bytes, bytes] = {}
    _run_round(publisher, parts, parts[0].clock, NOW, table)
    view = PartialsView(1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        merged = view.merged(table, {0})
        windows = merged["rep:r1"]["first_contact"][("r1",)]
        whole = windows["1h"]
        assert whole.count == 6000 and whole.quantiles((0.5,)) == [quantile_of_parts(parts)]
        kept = sum(acc.count for acc in windows.values())
        del merged, windows, whole
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # values as dicts: ~90 bytes each; decoded partials kept: another 8; in arrays: 8
    assert held < 9 * kept + 20_000, (held, kept)


def quantile_of_parts(parts: dict[int, PartitionAggregates]) -> float:
    values = sorted(p + i / 7 for p in parts for i in range(3000))
    return (values[2999] + values[3000]) / 2


def test_the_publisher_remembers_a_digest_of_what_it_sent_not_the_bytes() -> None:
    parts = {0: _part(*(fact("first_contact", ("r1",), NOW - 100, i / 7) for i in range(3000)))}
    publisher = PartialsPublisher(4)
    sent = [m for m in publisher.round(parts, parts[0].clock, NOW) if m is not None]
    assert max(len(value) for _, value, _ in sent) > 1_000
    reachable, todo = [], [publisher]
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if isinstance(ref, bytes):
                reachable.append(ref)
            elif isinstance(ref, (dict, tuple, list, set)):
                todo.append(ref)
    assert reachable and max(map(len, reachable)) <= 16, "digests, not the summaries"
    again = [m for m in publisher.round(parts, parts[0].clock, NOW + 1) if m is not None]
    assert again == [], "an unchanged summary is not sent again"


def test_full_rounds_come_a_partition_at_a_time_each_within_the_period() -> None:
    rounds = FullRounds(period=30.0)
    assert rounds.due([0, 1, 2, 3], 0.0) == set(), "first rounds are full anyway"
    picked = [rounds.due([0, 1, 2, 3], t) for t in (31.0, 32.0, 33.0, 34.0, 35.0)]
    assert picked[:4] == [{0}, {1}, {2}, {3}] and picked[4] == set(), "one a round"
    # each again one period after its last: the bursts stay apart
    assert [rounds.due([0, 1, 2, 3], t) for t in (61.5, 62.5, 63.5, 64.5)] == [
        {0},
        {1},
        {2},
        {3},
    ]
    assert rounds.due([0, 1, 2, 3], 65.0, everything=True) == {0, 1, 2, 3}
    assert rounds.due([0, 1, 2, 3], 66.0) == set(), "all were just sent in full"
    assert rounds.due([1, 5], 96.0) == {1}, "a partition gone is forgotten; a new one waits"
    assert [rounds.due([1, 5], t) for t in (126.5, 127.5)] == [{1}, {5}]


def test_a_round_sends_in_full_only_the_partitions_asked() -> None:
    parts = {p: _part(fact("attempt", (f"r{p}", "call"), NOW - 100 + p, 1.0)) for p in range(2)}
    clock = parts[0].clock
    publisher = PartialsPublisher(4)
    _run_round(publisher, parts, clock, NOW, {})
    sent = [m for m in publisher.round(parts, clock, NOW + 1, full={1}) if m is not None]
    sweeps = {key for key, _, _ in sent if key.startswith(SWEEP)}
    assert sweeps == {SWEEP + b"1"}
    assert [owner_of(k) for k, _, _ in sent if not k.startswith(SWEEP)] == ["rep:r1"]


def test_partials_go_binary_and_compressed_and_earlier_json_ones_still_read() -> None:
    part = _part(*(fact("first_contact", ("r1",), NOW - 100, i / 7) for i in range(3000)))
    [summary] = summaries(part, part.clock, NOW).values()
    sent = encode(summary)
    assert sent.startswith(partials.FORMAT)
    earlier = _earlier_json(summary, sort_keys=True)
    body = zstandard.ZstdDecompressor().decompress(sent[len(partials.FORMAT) :])
    assert len(sent) < len(body) / 2, "compressed"
    compressed = zstandard.ZstdCompressor(level=1).compress(earlier)
    assert encode(decode(earlier)) == sent and encode(decode(compressed)) == sent
    again = decode(sent)["first_contact"][("r1",)]
    assert {w: (a.count, a.total, _pairs(a)) for w, a in again.items()} == {
        w: (a.count, a.total, _pairs(a)) for w, a in summary["first_contact"][("r1",)].items()
    }


def _pairs(acc: Acc) -> list[list[float]]:
    assert acc.values is not None
    return [[value, n] for value, n in sorted(acc.values.items())]


def _acc(count: int, total: float) -> Acc:
    acc = Acc()
    acc.count, acc.total = count, total
    return acc


def test_a_total_that_overflowed_survives_the_wire_and_the_merge() -> None:
    # Two deals of 1e308 summed to inf, which JSON wrote as null; the owner's merge then
    # failed on int + None, at every restart too. Counts and totals stay numbers.
    summary: Summary = {
        "won_value": {("r1",): {"today": _acc(2, math.inf), "1h": _acc(1, -math.inf)}},
        "cost": {("x",): {"today": _acc(1, math.nan)}},
    }
    again = decode(encode(summary))
    assert again["won_value"][("r1",)]["today"].total == math.inf
    assert again["won_value"][("r1",)]["1h"].total == -math.inf
    assert math.isnan(again["cost"][("x",)]["today"].total)
    merged = merge_summaries([again, decode(encode(summary))])
    assert merged["won_value"][("r1",)]["today"].total == math.inf


def test_a_null_total_an_earlier_build_wrote_reads_as_not_a_number() -> None:
    head = orjson.dumps({"won_value": {"r1": {"today": [2, None, None]}}})
    body = len(head).to_bytes(4, "little") + head
    raw = partials.FORMAT + zstandard.ZstdCompressor(level=1).compress(body)
    merged = merge_summaries([decode(raw), decode(raw)])
    acc = merged["won_value"][("r1",)]["today"]
    assert acc.count == 4 and math.isnan(acc.total)


def _earlier_json(summary: Summary, sort_keys: bool = False) -> bytes:
    """A summary as an earlier version wrote it: JSON (its keys sorted, as that version
    did, with ``sort_keys``), values as [value, count] pairs."""
    return orjson.dumps(
        {
            family: {
                partials.LABEL_SEP.join(labels): {
                    w: [acc.count, acc.total, None if acc.values is None else _pairs(acc)]
                    for w, acc in per_window.items()
                }
                for labels, per_window in per_labels.items()
            }
            for family, per_labels in summary.items()
        },
        option=orjson.OPT_SORT_KEYS if sort_keys else None,
    )


@pytest.mark.parametrize("parts", [1, 2, 4])
def test_the_owner_merges_the_bytes_as_it_would_merge_them_decoded(parts: int) -> None:
    """``codec.merged``: what ``merging`` gives of the decoded partials, byte for byte once
    encoded, for every owner key of the scenario (counts, sums, exact values, the periods'
    sketches), whatever the number of partitions that feed a key; an earlier JSON partial
    among them and one that does not decode change nothing else."""
    engine = Engine(SETTINGS, {})
    engine.process(_messages(), NOW)
    per_key: dict[str, list[bytes]] = {}
    for _, part in sorted(engine.partitions.items())[:parts]:
        for owner_key, summary in summaries(part, engine.clock, NOW).items():
            per_key.setdefault(owner_key, []).append(encode(summary))
    assert any(len(raws) > 1 for raws in per_key.values()) or parts == 1
    bad: list[bytes] = []
    for owner_key, raws in per_key.items():
        expected = merge_summaries([decode(raw) for raw in raws])
        got = at_once(partials.merged(raws, lambda raw, exc: bad.append(raw)))
        assert encode(got) == encode(expected), owner_key
        mixed = [_earlier_json(decode(raws[0])), *raws[1:], b"SPv2 not zstd"]
        got = at_once(partials.merged(mixed, lambda raw, exc: bad.append(raw)))
        assert encode(got) == encode(expected), owner_key
    assert bad == [b"SPv2 not zstd"] * len(per_key)


def test_a_head_of_another_shape_leaves_out_that_partial_only() -> None:
    good = encode({"created": {("r1", "ads"): {"7d": _acc(2, 2.0)}}})
    odd = orjson.dumps({"created": {"r1\x1fads": {"7d": "not a row"}}})
    junk = b"SPv2 not zstd"
    bad: list[bytes] = []
    got = at_once(partials.merged([junk, good, odd], lambda raw, exc: bad.append(raw)))
    assert sorted(bad) == sorted([junk, odd]), "each bad partial reported once"
    assert got["created"][("r1", "ads")]["7d"].count == 2


def test_each_thread_decompresses_with_its_own_decompressor() -> None:
    """The view is merged ahead in a thread while the loop decodes rollups: a zstd
    decompressor shared by two threads gave wrong bytes, some without an error."""
    mine = partials._decompressor()
    assert partials._decompressor() is mine
    theirs: list[object] = []
    thread = threading.Thread(target=lambda: theirs.append(partials._decompressor()))
    thread.start()
    thread.join()
    assert theirs and theirs[0] is not mine
