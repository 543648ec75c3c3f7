"""Aggregates: cached windows equal a fresh merge of their buckets, and ``take_touched``
names every series whose windows changed, whatever the order of facts, prunes and time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.aggregates import Acc, PartitionAggregates
from streamproc.facts import Fact
from streamproc.kpis import _rounded
from streamproc.windows import HOUR, MINUTE, WindowClock

ZONE = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 10, 23, 50, 15, tzinfo=ZONE).timestamp()  # 10 minutes to midnight
DAY = 86400

# Times: mostly within the last hours (every window and level), some over the whole week.
_times = st.one_of(st.integers(-3 * HOUR, 5 * MINUTE), st.integers(-8 * DAY, 0), st.just(0)).map(
    lambda s: NOW + s + 0.25
)
_values = st.sampled_from([0.1, 0.2, 0.3, 1.5, 1234.56, 7.0, 0.0])
_facts = st.one_of(
    st.builds(
        Fact,
        st.just("attempt"),
        st.sampled_from([("r1", "call"), ("r2", "email")]),
        _times,
        _values,
    ),
    st.builds(Fact, st.just("first_contact"), st.sampled_from([("r1",), ("r2",)]), _times, _values),
    st.builds(Fact, st.just("awaiting_since"), st.just(("r1",)), st.none(), _values),
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _facts),
        st.tuples(st.just("retract"), st.integers(0, 10_000)),
        st.tuples(st.just("advance"), st.integers(0, 3 * HOUR)),
        st.tuples(st.just("advance"), st.sampled_from([MINUTE, HOUR, DAY, 10])),
        st.tuples(st.just("prune"), st.none()),
        st.tuples(st.just("read"), st.none()),
        st.tuples(st.just("reread"), st.integers(0, 10_000)),  # at an earlier read's "now"
    ),
    max_size=80,
)


def _same(cached: Acc | None, fresh: Acc) -> bool:
    if fresh.count == 0:
        return cached is None
    return (
        cached is not None
        and cached.count == fresh.count
        and cached.values == fresh.values
        and _rounded(cached.total) == _rounded(fresh.total)
    )


def _check_windows(part: PartitionAggregates, now: float) -> None:
    for per_labels in part.windowed.values():
        for series in per_labels.values():
            for bounds in part.clock.all_bounds(now):
                fresh = series.merge(bounds)
                assert _same(series.window(bounds), fresh), (bounds, series.window(bounds), fresh)


def _run(part: PartitionAggregates, ops: list, now: float, applied: list[Fact]) -> float:  # type: ignore[type-arg]
    reads = [now]
    for op, arg in ops:
        if op == "add":
            part.apply([arg], 1)
            applied.append(arg)
        elif op == "retract" and applied:
            part.apply([applied.pop(arg % len(applied))], -1)
        elif op == "advance":
            now += arg
        elif op == "prune":
            part.prune(now)
        elif op == "read":
            _check_windows(part, now)
            reads.append(now)
        elif op == "reread":
            _check_windows(part, reads[arg % len(reads)])
    return now


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_cached_windows_equal_a_fresh_merge(ops: list) -> None:  # type: ignore[type-arg]
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    now = _run(part, ops, NOW, [])
    _check_windows(part, now)


def _snapshot(part: PartitionAggregates, now: float) -> dict:  # type: ignore[type-arg]
    out = {}
    for family, per_labels in part.windowed.items():
        for labels, series in per_labels.items():
            for bounds in part.clock.all_bounds(now):
                acc = series.merge(bounds)
                if acc.count:
                    out[family, labels, bounds.name] = (acc.count, _rounded(acc.total), acc.values)
    for family, per_labels in part.live.items():
        for labels, acc in per_labels.items():
            out[family, labels, "live"] = (acc.count, _rounded(acc.total), acc.values)
    return out


@settings(max_examples=300, deadline=None)
@given(_ops, _ops)
def test_untouched_series_did_not_change(before: list, after: list) -> None:  # type: ignore[type-arg]
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    applied: list[Fact] = []
    now = _run(part, before, NOW, applied)
    assert part.take_touched(part.clock.all_bounds(now)) is None  # the first look: all
    old = _snapshot(part, now)
    now = _run(part, after, now, applied)
    touched = part.take_touched(part.clock.all_bounds(now))
    if touched is None:
        return  # the windows moved too far: everything counts as changed
    new = _snapshot(part, now)
    for key in set(old) | set(new):
        if key[:2] not in touched:
            assert old.get(key) == new.get(key), key


def test_a_window_moving_off_a_bucket_touches_its_series() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    part.apply([Fact("attempt", ("r1", "call"), NOW - 59 * MINUTE, 1.0)], 1)
    part.apply([Fact("attempt", ("r2", "call"), NOW - 2 * DAY, 1.0)], 1)
    part.take_touched(part.clock.all_bounds(NOW))
    assert part.take_touched(part.clock.all_bounds(NOW)) == set()
    # a minute later the 1h window no longer holds r1's attempt; r2's is still in 7d
    assert part.take_touched(part.clock.all_bounds(NOW + MINUTE)) == {("attempt", ("r1", "call"))}
    # at midnight "today" moves: the day r1's attempt was on leaves it
    later = NOW + 10 * MINUTE
    assert part.take_touched(part.clock.all_bounds(later)) == {("attempt", ("r1", "call"))}


def test_prune_drops_cached_windows_over_pruned_buckets() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    facts = [Fact("attempt", ("r1", "call"), NOW - t, 1.0) for t in (59 * MINUTE, 167 * HOUR)]
    part.apply(facts, 1)
    series = part.windowed["attempt"][("r1", "call")]
    then = part.clock.all_bounds(NOW)
    assert [series.window(b).count for b in then] == [1, 1, 2]  # type: ignore[union-attr]
    part.prune(NOW + 3 * HOUR)  # drops both buckets from the minute and hour levels
    for bounds in then:
        assert _same(series.window(bounds), series.merge(bounds)), bounds


def test_a_cached_window_emptied_holds_no_float_dust() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    fact = Fact("won_value", ("r1",), NOW - 10, 0.1)
    other = Fact("won_value", ("r1",), NOW - 20, 0.2)
    keeper = Fact("won_value", ("r1",), NOW - 7.5 * DAY, 1.0)  # in no window: the series stays
    bounds = part.clock.bounds("7d", NOW)
    part.apply([fact, other, keeper], 1)
    series = part.windowed["won_value"][("r1",)]
    assert series.window(bounds).total == 0.1 + 0.2  # type: ignore[union-attr]
    part.apply([other], -1)
    assert series.window(bounds).total != 0.1  # type: ignore[union-attr] # dust: 0.1 + 0.2 - 0.2
    part.apply([fact], -1)
    assert series.window(bounds) is None
    part.apply([Fact("won_value", ("r1",), NOW - 3 * DAY, 0.001)], 1)
    assert series.window(bounds).total == 0.001  # type: ignore[union-attr] # as a fresh merge


def test_wire_form_is_unchanged() -> None:
    """The partials written before the cached windows decode the same, and vice versa."""
    acc = Acc(dist=True)
    for value in (1.5, 2.0, 2.0, 1e-7):
        acc.add(value, 1)
    old_style = [acc.count, acc.total, [[v, n] for v, n in acc.values.items()]]  # type: ignore[union-attr]
    assert orjson.dumps(acc.to_wire()) == orjson.dumps(old_style)
    back = Acc.from_wire(orjson.loads(orjson.dumps(old_style)))
    assert (back.count, back.total, back.values) == (acc.count, acc.total, acc.values)
    plain = Acc()
    plain.add(3.0, 1)
    assert Acc.from_wire(orjson.loads(orjson.dumps(plain.to_wire()))).values is None
