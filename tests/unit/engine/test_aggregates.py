"""Aggregates: every window equals the facts applied to it (those its level still keeps),
and ``take_touched`` names every series whose windows changed, whatever the order of facts,
prunes and time."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.engine import aggregates
from streamproc.engine.aggregates import (
    DIST_FAMILIES,
    NO_COUNTS,
    Acc,
    PartitionAggregates,
    SortedValues,
    fact_diff,
    sketched,
)
from streamproc.engine.customer import CustomerFacts
from streamproc.engine.facts import Fact
from streamproc.engine.windows import HOUR, MINUTE, WindowBounds, WindowClock
from streamproc.kpis.compute import quantile, rounded
from tests.support.facts import fact

ZONE = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 10, 23, 50, 15, tzinfo=ZONE).timestamp()  # 10 minutes to midnight
DAY = 86400

# Times: mostly within the last hours (every window and level), some over the whole week,
# some over the calendar periods (back past the start of last_year), some ahead (a cost's
# shares of the days to come: within the advances of ``_ops``, and up to 731 days).
_times = st.one_of(
    st.integers(-3 * HOUR, 5 * MINUTE),
    st.integers(-8 * DAY, 0),
    st.integers(-450 * DAY, 0),
    st.just(0),
    st.integers(5 * MINUTE, 3 * DAY) | st.integers(3 * DAY, 731 * DAY),
).map(lambda s: NOW + s + 0.25)
_values = st.sampled_from([0.1, 0.2, 0.3, 1.5, 1234.56, 7.0, 0.0])
_facts = st.one_of(
    st.builds(
        fact,
        st.just("attempt"),
        st.sampled_from([("r1", "call"), ("r2", "email")]),
        _times,
        _values,
    ),
    st.builds(fact, st.just("first_contact"), st.sampled_from([("r1",), ("r2",)]), _times, _values),
    st.builds(fact, st.just("awaiting_since"), st.just(("r1",)), st.none(), _values),
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


def _expected(part: PartitionAggregates, applied: list[Fact], bounds: WindowBounds) -> dict:  # type: ignore[type-arg]
    """The oracle: (family, labels) -> (count, total, values) of the applied facts that lie
    in the window and that its level still keeps (at or after the level's watermark), a
    current period's up to the end of today; the periods (months) keep each value as its
    sketch bucket's centre."""
    clock = part.clock
    key_of, watermark = {
        "m": (clock.minute, part.wm_minute),
        "h": (clock.hour, part.wm_hour),
        "d": (clock.day, part.wm_day),
        "M": (clock.month, part.wm_period),
    }[bounds.level]
    kept = sketched if bounds.level == "M" else float
    out: dict = {}  # type: ignore[type-arg]
    later = bounds.later_days  # a current period's days after today: not in it yet
    for family, labels, t, value in applied:
        if t is None or t < watermark or not bounds.first_key <= key_of(t) <= bounds.last_key:
            continue
        if later is not None and later[0] <= clock.day(t) <= later[1]:
            continue
        count, total, values = out.get((family, labels), (0, 0.0, Counter()))
        out[family, labels] = (count + 1, total + value, values + Counter([kept(value)]))
    return {
        k: (c, rounded(t), dict(v) if k[0] in DIST_FAMILIES else {}) for k, (c, t, v) in out.items()
    }


def _counts(acc: Acc) -> dict[float, int] | None:
    """The accumulator's value multiset as a new dict, whatever its form."""
    return None if acc.values is None else dict(acc.values.items())


def _check_windows(part: PartitionAggregates, now: float, applied: list[Fact]) -> None:
    assert not NO_COUNTS, "a level filled the counts every empty level shares"
    for bounds in part.clock.all_bounds(now):
        got = {}
        for family, per_labels in part.windowed.items():
            for labels, series in per_labels.items():
                acc = series.window(bounds)
                if acc is not None:
                    values = _counts(acc) if family in DIST_FAMILIES else {}
                    got[family, labels] = (acc.count, rounded(acc.total), values)
        assert got == _expected(part, applied, bounds), bounds


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
            _check_windows(part, now, applied)
            reads.append(now)
        elif op == "reread":
            _check_windows(part, reads[arg % len(reads)], applied)
    return now


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_windows_equal_the_facts_applied_to_them(ops: list) -> None:  # type: ignore[type-arg]
    part = PartitionAggregates(WindowClock(ZONE, fiscal_start_month=4), NOW)
    applied: list[Fact] = []
    now = _run(part, ops, NOW, applied)
    _check_windows(part, now, applied)


def windows(
    part: PartitionAggregates, now: float
) -> Iterator[tuple[tuple[str, tuple[str, ...], str], Acc]]:
    """((family, labels, window), its merged accumulator) of every series and window."""
    for family, per_labels in part.windowed.items():
        for labels, series in per_labels.items():
            for bounds in part.clock.all_bounds(now):
                yield (family, labels, bounds.name), series.merge(bounds)


def _snapshot(part: PartitionAggregates, now: float) -> dict:  # type: ignore[type-arg]
    out = {
        key: (acc.count, rounded(acc.total), _counts(acc))
        for key, acc in windows(part, now)
        if acc.count
    }
    for family, per_labels in part.live.items():
        for labels, acc in per_labels.items():
            out[family, labels, "live"] = (acc.count, rounded(acc.total), _counts(acc))
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
    part.apply([fact("attempt", ("r1", "call"), NOW - 59 * MINUTE, 1.0)], 1)
    part.apply([fact("attempt", ("r2", "call"), NOW - 2 * DAY, 1.0)], 1)
    part.take_touched(part.clock.all_bounds(NOW))
    assert part.take_touched(part.clock.all_bounds(NOW)) == set()
    # a minute later the 1h window no longer holds r1's attempt; r2's is still in 7d
    assert part.take_touched(part.clock.all_bounds(NOW + MINUTE)) == {("attempt", ("r1", "call"))}
    # at midnight "today" moves: the day r1's attempt was on leaves it
    later = NOW + 10 * MINUTE
    assert part.take_touched(part.clock.all_bounds(later)) == {("attempt", ("r1", "call"))}


def test_an_emptied_window_holds_no_float_dust() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    one = fact("won_value", ("r1",), NOW - 10, 0.1)
    other = fact("won_value", ("r1",), NOW - 20, 0.2)
    keeper = fact("won_value", ("r1",), NOW - 7.5 * DAY, 1.0)  # in no window: the series stays
    bounds = part.clock.bounds("7d", NOW)
    part.apply([one, other, keeper], 1)
    series = part.windowed["won_value"][("r1",)]
    assert series.window(bounds).total == 0.1 + 0.2  # type: ignore[union-attr]
    part.apply([other], -1)
    assert series.window(bounds).total != 0.1  # type: ignore[union-attr] # dust: 0.1 + 0.2 - 0.2
    part.apply([one], -1)
    assert series.window(bounds) is None
    part.apply([fact("won_value", ("r1",), NOW - 3 * DAY, 0.001)], 1)
    assert series.window(bounds).total == 0.001  # type: ignore[union-attr] # as a fresh merge


def test_a_level_emptied_by_a_prune_shares_the_empty_counts_and_grows_anew() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    part.apply([("won_value", ("r1",), NOW, 5.0)], 1)
    series = part.windowed["won_value"][("r1",)]
    assert series.m.counts is not NO_COUNTS and series.M.archive.counts is NO_COUNTS
    later = NOW + 3 * 3600.0  # past the minutes' two hours
    part.prune(later)
    assert series.m.counts is NO_COUNTS
    part.apply([("won_value", ("r1",), later, 7.0)], 1)
    assert series.m.counts is not NO_COUNTS and not NO_COUNTS
    assert series.m.sums(0, 1 << 40) == (1, 7.0)


def test_a_series_grows_only_the_levels_its_facts_land_in_and_gives_back_those_emptied() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    old = fact("won_value", ("r1",), NOW - 40 * DAY, 5.0)  # in the periods alone
    part.apply([old], 1)
    part.apply([old], -1)  # forgotten: into the archive
    part.archive([old])
    series = part.windowed["won_value"][("r1",)]
    shared = (series.m, series.h, series.d, series.M.kept)
    assert all(level.unborn for level in shared) and not series.M.archive.unborn
    part.apply([fact("won_value", ("r2",), NOW - 40 * DAY, 1.0)], 1)
    assert part.windowed["won_value"][("r2",)].m is series.m  # one shared empty level
    with pytest.raises(AssertionError):
        series.m.add(0, 1.0, 1)  # never written: a write would land in every series
    new = fact("won_value", ("r1",), NOW, 7.0)
    part.apply([new], 1)
    assert not any(level.unborn for level in (series.m, series.h, series.d, series.M.kept))
    later = NOW + 10 * DAY  # past the minutes, hours and days kept
    part.prune(later)
    assert series.m.unborn and series.h.unborn and series.d.unborn
    year = part.clock.bounds("year", later)
    assert series.window(year).count == 2 and series.window(year).total == 12.0  # type: ignore[union-attr]
    part.apply([new], -1)
    part.apply([new], 1)  # the kept months still its own: the same sums
    assert series.window(year).total == 12.0  # type: ignore[union-attr]


def test_an_archived_months_pairs_stay_sorted_and_count_as_a_dict_would() -> None:
    """(centre, count) pairs sorted by centre: a count equal to a centre is no centre, a
    pair goes at 0, and a retraction before its add is a negative count until then."""
    pairs = array("d")
    model: Counter[float] = Counter()
    for centre, n in ((5.0, 2), (2.0, 5), (3.0, -1), (5.0, 1), (3.0, 1), (2.0, -5), (0.5, 4)):
        aggregates._count_in(pairs, centre, n)
        model[centre] += n
        assert list(aggregates.counted_pairs(pairs)) == sorted(
            (c, k) for c, k in model.items() if k
        )
    assert list(pairs) == [0.5, 4.0, 5.0, 3.0]


def test_a_prune_keeps_the_later_buckets_as_they_were() -> None:
    """A prune that drops the head of a level: the buckets after it keep count and total."""
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    applied = [
        fact("attempt", ("r1", "call"), NOW - 100 * MINUTE, 1.5),
        fact("first_contact", ("r1",), NOW - 100 * MINUTE, 30.0),
        fact("attempt", ("r1", "call"), NOW, 7.0),
        fact("first_contact", ("r1",), NOW, 60.0),
    ]
    part.apply(applied, 1)
    later = NOW + 30 * MINUTE
    part.prune(later)  # the minute level keeps 120 minutes: the first two facts leave it
    _check_windows(part, later, applied)
    hour = part.clock.bounds("1h", later)
    acc = part.windowed["first_contact"][("r1",)].window(hour)
    assert acc is not None and (acc.count, acc.total, _counts(acc)) == (1, 60.0, {60.0: 1})


# --- the buckets ahead of now (a cost's shares of the days to come) -------------------------

COST = ("cost", ("marketing", "google_ads"))


def _cost(clock: WindowClock, start: float, end: float, amount: float = 365.0) -> list[Fact]:
    """A cost's facts, as a customer's derive them: a share a local day of the period."""
    return [
        fact(*COST, at, share)
        for at, share in CustomerFacts(clock).spread(start, amount, start, end)
    ]


def _entries(level: Any) -> int:
    """The bucket entries of a level: its arrays' slots and its buckets ahead."""
    return len(level.counts) + len(getattr(level, "ahead", None) or ())


def _bytes(level: Any) -> int:
    ahead = getattr(level, "ahead", None)
    arrays = [level.counts, level.totals] + (
        [] if ahead is None else [ahead.keys, ahead.counts, ahead.totals]
    )
    return sum(a.itemsize * len(a) for a in arrays if a is not None)


def _dense(part: PartitionAggregates) -> PartitionAggregates:
    """``part`` with every fact in its levels' arrays, however far ahead (as before the
    buckets ahead): the reference the windows must equal exactly."""
    part.ahead_minute = part.ahead_hour = 1 << 62  # prunes keep the larger
    return part


def _exact(part: PartitionAggregates, now: float) -> dict:  # type: ignore[type-arg]
    """Every window's count, total and values of every series, as merged (not rounded)."""
    return {
        key: (acc.count, acc.total, _counts(acc))
        for key, acc in windows(part, now)
        if acc.count or acc.total
    }


# A level's arrays span at most 120 + 120 minutes (kept, and the horizon ahead) or 169 + 169
# hours, and a few spare keys: with one bucket ahead a day of a period, this many more.
_FIXED_SPAN = 2 * 169 + 8


@pytest.mark.parametrize("days_ahead", [0, 1, 334, 366])
def test_a_prepaid_year_holds_a_bucket_a_day_not_a_minute(days_ahead: int) -> None:
    """A cost of a year's period starting today, tomorrow, in 11 months or in a year: each
    level holds a few entries a day of it, not one a minute (before: ~524,000 minutes of
    arrays, 6.3 MB a series, for 365 shares)."""
    clock = WindowClock(ZONE)
    part = PartitionAggregates(clock, NOW)
    first = clock.day(NOW) + days_ahead
    part.apply(_cost(clock, clock.midnight(first), clock.midnight(first + 365)), 1)
    series = part.windowed[COST[0]][COST[1]]
    for name in ("m", "h", "d"):
        level = series.level(name)
        assert _entries(level) <= 366 + _FIXED_SPAN, name
        assert _bytes(level) <= 20 * (366 + _FIXED_SPAN), name
    assert _entries(series.m) + _entries(series.h) <= 2 * 366 + 2 * _FIXED_SPAN


def test_the_longest_periods_in_one_series_hold_a_bucket_a_day_and_a_cost() -> None:
    """Costs of the longest period (731 days, ending at most 731 days ahead), each starting
    at another minute of its first day (its first share there): a bucket a day and one a
    cost's start, whatever the minutes in between."""
    clock = WindowClock(ZONE)
    part = PartitionAggregates(clock, NOW)
    costs = 20
    for i in range(costs):
        start = clock.midnight(clock.day(NOW) + i) + 37 * i * MINUTE + 11
        part.apply(_cost(clock, start, min(start + 731 * DAY, NOW + 731 * DAY)), 1)
    series = part.windowed[COST[0]][COST[1]]
    for name in ("m", "h"):
        assert _entries(series.level(name)) <= 732 + costs + _FIXED_SPAN, name
    assert _entries(series.d) <= 732 + 9 + 8


@pytest.mark.parametrize("zone", ["Europe/Paris", "UTC", "America/Santiago"])
def test_a_future_period_enters_every_window_as_the_arrays_alone_had_it(zone: str) -> None:
    """A cost of a period starting in two days at 13:37 (its first share there, the others
    at local midnights, a DST change within it in Paris), time passing by 10 minutes with a
    lead's fact at each (the arrays grow over the buckets ahead), prunes, the cost retracted
    and added again: every window equals, exactly, what the arrays alone (before the
    buckets ahead) give, the shares enter ``1h``, ``today`` and ``7d`` in their turn, and a
    window moving onto one touches its series."""
    clock = WindowClock(ZoneInfo(zone), fiscal_start_month=4)
    now = NOW
    part, dense = PartitionAggregates(clock, now), _dense(PartitionAggregates(clock, now))
    start = clock.midnight(clock.day(now) + 2) + 13 * HOUR + 37 * MINUTE
    cost = _cost(clock, start, clock.midnight(clock.day(now) + 21), amount=1000.0)
    for p in (part, dense):
        p.apply(cost, 1)
    applied = list(cost)
    seen = {name: 0 for name in ("1h", "today", "7d")}
    part.take_touched(clock.all_bounds(now))
    before = _exact(part, now)
    for step in range(1, 22 * 144):
        now += 10 * MINUTE
        lead = fact("attempt", ("r1", "call"), now - 30, 1.0)
        applied.append(lead)
        for p in (part, dense):
            p.apply([lead], 1)
            if step % 6 == 0:
                p.prune(now)
            if step == 1500:  # the customer changed: its facts retracted, then added again
                p.apply(cost, -1)
                p.apply(cost, 1)
        got = _exact(part, now)
        assert got == _exact(dense, now), (step, now)
        touched = part.take_touched(clock.all_bounds(now))
        assert touched is not None
        for key in set(got) | set(before):
            if got.get(key) != before.get(key):
                assert key[:2] in touched, (step, key)
        for name in seen:
            seen[name] += (*COST, name) in got
        before = got
        if step % 144 == 0:
            _check_windows(part, now, applied)
    assert seen["1h"] >= 19 * 6 and seen["today"] >= 18 * 144 and seen["7d"] >= 19 * 144


def test_a_bucket_ahead_that_time_passed_leaves_nothing() -> None:
    """A distribution's fact ahead that the arrays never reached (no other fact in its
    minutes) and the minute level then drops: its count and its values go."""
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    ahead, kept = NOW + DAY, NOW - 5 * DAY  # ``kept`` keeps the series (7d, the periods)
    part.apply([fact("first_contact", ("r1",), t, 5.0) for t in (ahead, kept)], 1)
    minutes = part.windowed["first_contact"][("r1",)].m
    assert minutes.used == 1 and not minutes.counts and minutes.ahead is not None
    assert part.windowed["first_contact"][("r1",)].window(part.clock.bounds("1h", ahead + 1))
    part.prune(ahead + 3 * HOUR)
    assert (minutes.used, minutes.values, minutes.ahead) == (0, {}, None)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_buckets_ahead_read_as_the_arrays_alone(ops: list) -> None:  # type: ignore[type-arg]
    """Any facts, retractions, prunes and time: with the horizons a minute and an hour
    ahead (facts go ahead, and the arrays take them over, all the time), every window
    equals exactly what the arrays alone give."""
    clock = WindowClock(ZONE, fiscal_start_month=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aggregates, "AHEAD_MINUTES", 1, raising=False)
        patch.setattr(aggregates, "AHEAD_HOURS", 1, raising=False)
        part, dense = PartitionAggregates(clock, NOW), _dense(PartitionAggregates(clock, NOW))
        now, applied, reads = NOW, [], [NOW]
        for op, arg in ops:
            if op == "add":
                for p in (part, dense):
                    p.apply([arg], 1)
                applied.append(arg)
            elif op == "retract" and applied:
                gone = applied.pop(arg % len(applied))
                for p in (part, dense):
                    p.apply([gone], -1)
            elif op == "advance":
                now += arg
            elif op == "prune":
                for p in (part, dense):
                    p.prune(now)
            elif op in ("read", "reread"):
                at = now if op == "read" else reads[arg % len(reads)]
                assert _exact(part, at) == _exact(dense, at)
                reads.append(now)
        assert _exact(part, now) == _exact(dense, now)
        for per_labels in part.windowed.values():
            for series in per_labels.values():
                for level in (series.m, series.h):
                    ahead = getattr(level, "ahead", None)
                    held = {level.first + i for i, c in enumerate(level.counts) if c}
                    held |= set(ahead.keys if ahead is not None else ())
                    assert level.used == len(held)
                    assert level.values is None or set(level.values) == held, "no values left"
                    if ahead is not None:
                        assert ahead, "no empty part ahead is kept"
                        keys = list(ahead.keys)
                        assert keys == sorted(set(keys)) and 0 not in ahead.counts
                        assert keys[0] >= level.first + len(level.counts), "beyond the arrays"


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.sampled_from([0.0, 1.5, 2.0, 7.25, 60.0, 3600.0]) | st.floats(0, 1e6), min_size=1
    ),
    qs=st.lists(st.floats(0, 1), min_size=1, max_size=4),
)
def test_quantiles_of_the_multiset_equal_those_of_its_sorted_expansion(
    values: list[float], qs: list[float]
) -> None:
    acc = Acc(dist=True)
    for value in values:
        acc.add(value, 1)
    expanded = sorted(values)
    assert acc.quantiles(qs) == [quantile(expanded, q) for q in qs]
    frozen = Acc.merged([acc])
    assert frozen.quantiles(qs) == [quantile(expanded, q) for q in qs], "frozen reads the same"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.floats(-1e9, 1e9), st.integers(1, 1000), max_size=50),
    st.floats(-2e9, 2e9),
)
def test_frozen_values_read_as_the_multiset_they_were_made_of(
    counts: dict[float, int], bound: float
) -> None:
    acc = Acc(dist=True)
    for value, n in counts.items():
        for _ in range(n):
            acc.add(value, 1)
    kept = (acc.at_most(bound), acc.smallest())
    acc = Acc.merged([acc])
    assert isinstance(acc.values, SortedValues) and len(acc.values) == sum(counts.values())
    assert dict(acc.values.items()) == counts and list(acc.values.items()) == sorted(counts.items())
    assert bool(acc.values) == bool(counts)
    assert (acc.at_most(bound), acc.smallest()) == kept
    assert kept[0] == sum(n for v, n in counts.items() if v <= bound)
    assert kept[1] == (min(counts) if counts else None)
    merged = Acc(dist=True)
    merged.merge(acc)
    merged.merge(acc)
    assert merged.values == {v: 2 * n for v, n in counts.items()}, "merges from a frozen one"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from([0.5, 1.0, 2.0]) | st.floats(0, 1e3), st.integers(1, 5)),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.booleans(), min_size=5, max_size=5),
    st.booleans(),
)
def test_accumulators_merged_at_once_equal_those_merged_pairwise(
    parts: list[dict[float, int]], frozen: list[bool], counted: bool
) -> None:
    """``Acc.merged`` (the owner's: one sort of all runs; ``counted``, the periods': the
    counts added up) against ``merge`` one by one, from parts in either form."""
    accs = []
    for part, freeze in zip(parts, frozen, strict=False):
        acc = Acc(dist=True)
        for value, n in part.items():
            acc.add(value, n)
        accs.append(Acc.merged([acc]) if freeze else acc)
    pairwise = Acc(dist=True)
    for acc in accs:
        pairwise.merge(acc)
    at_once = Acc.merged(accs, counted=counted)
    assert (at_once.count, at_once.total) == (pairwise.count, pairwise.total)
    assert at_once.values is not None and dict(at_once.values.items()) == pairwise.values
    if not counted:
        assert isinstance(at_once.values, SortedValues)
        assert list(at_once.values.array) == sorted(at_once.values.array)
    assert at_once.quantiles((0.0, 0.5, 0.9, 1.0)) == pairwise.quantiles((0.0, 0.5, 0.9, 1.0))


def test_a_frozen_accumulator_is_read_only() -> None:
    acc = Acc(dist=True)
    acc.add(2.0, 1)
    acc = Acc.merged([acc])
    with pytest.raises(AssertionError):
        acc.add(3.0, 1)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["add", "retract", "merge"]), st.floats(0, 1e4)), min_size=1
    ),
)
def test_quantiles_asked_again_follow_every_change(steps: list[tuple[str, float]]) -> None:
    """Quantiles are remembered between asks (merged summaries are asked every round):
    any add, retraction or merge since must show."""
    acc, kept = Acc(dist=True), [1.0]
    acc.add(1.0, 1)
    for op, value in steps:
        assert acc.quantiles((0.5, 0.9)) == [quantile(sorted(kept), q) for q in (0.5, 0.9)]
        if op == "add":
            acc.add(value, 1)
            kept.append(value)
        elif op == "retract" and len(kept) > 1:
            acc.add(kept.pop(0), -1)
        else:
            other = Acc(dist=True)
            other.add(value, 1)
            acc.merge(other)
            kept.append(value)
    assert acc.quantiles((0.5, 0.9)) == [quantile(sorted(kept), q) for q in (0.5, 0.9)]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from([0.5, 1.0, 2.0, 3.5]) | st.floats(0, 1e3), st.integers(1, 9)),
    st.dictionaries(st.sampled_from([0.5, 1.0, 2.0, 3.5]) | st.floats(0, 1e3), st.integers(1, 9)),
)
def test_a_merge_adds_the_counts_of_values_both_hold(
    ours: dict[float, int], theirs: dict[float, int]
) -> None:
    acc, other = Acc(dist=True), Acc(dist=True)
    acc.values, other.values = dict(ours), dict(theirs)
    acc.merge(other)
    assert acc.values == dict(Counter(ours) + Counter(theirs))
    assert other.values == theirs, "the other side is left as it was"


def test_a_periods_cost_shares_count_as_their_days_come() -> None:
    """A March invoice of 3,100 (100 a local day) read on March 15 at noon: today 100,
    month and quarter (fiscal year from April: January - March) 1,500, the days to come
    in no window yet; on April 2 at noon, last_month and last_quarter 3,100 whole, month 0."""
    clock = WindowClock(ZONE, fiscal_start_month=4)

    def at(month: int, day: int, hour: int = 0) -> float:
        return datetime(2026, month, day, hour, tzinfo=ZONE).timestamp()

    part = PartitionAggregates(clock, at(3, 15, 12))
    part.apply(_cost(clock, at(3, 1), at(4, 1), amount=3100.0), 1)

    def read(now: float) -> dict[str, float]:
        series = part.windowed[COST[0]][COST[1]]
        out = {}
        for bounds in clock.all_bounds(now):
            acc = series.window(bounds)
            if acc is not None:
                out[bounds.name] = rounded(acc.total)
        return out

    assert read(at(3, 15, 12)) == {"today": 100, "7d": 700, "month": 1500, "quarter": 1500,
                                   "year": 1500}  # fmt: skip
    # 7d: the shares of March 27 - 31 (the 168 hours up to April 2, 12:00 - 13:00)
    assert read(at(4, 2, 12)) == {"7d": 500, "last_month": 3100, "last_quarter": 3100,
                                  "last_year": 3100}  # fmt: skip


def test_what_is_left_of_a_period_once_its_days_to_come_are_out_has_no_float_dust() -> None:
    """A cost of 0 today beside an invoice of ~4.2e9 over the days to come: the year reads
    0, not the -7.6e-06 the subtraction left (a review's case)."""
    clock = WindowClock(ZoneInfo("UTC"))
    now = datetime(2026, 6, 15, 12, tzinfo=UTC).timestamp()
    part = PartitionAggregates(clock, now)
    later = datetime(2026, 6, 16, tzinfo=UTC).timestamp()
    end = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    part.apply([fact(*COST, now - 60, 0.0), *_cost(clock, later, end, 4237667072.47)], 1)
    year = part.windowed[COST[0]][COST[1]].window(clock.bounds("year", now))
    assert year is not None and (year.count, year.total) == (1, 0.0)


_fact = st.tuples(
    st.sampled_from(["attempt", "won"]),
    st.sampled_from([("r1",), ("r2",)]),
    st.sampled_from([None, 1.0, 2.0]),
    st.sampled_from([1.0, 5.0]),
)


@settings(max_examples=300, deadline=None)
@given(old=st.lists(_fact, max_size=8), new=st.lists(_fact, max_size=8))
def test_the_difference_of_two_fact_lists_is_their_multiset_difference(
    old: list[Fact], new: list[Fact]
) -> None:
    retract, add = fact_diff(old, new)
    assert Counter(retract) == Counter(old) - Counter(new)
    assert Counter(add) == Counter(new) - Counter(old)
    if len(set(old)) == len(old) and len(set(new)) == len(new):
        # in their lists' order: the totals' float rounding does not depend on hashes
        assert retract == [f for f in old if f not in new]
        assert add == [f for f in new if f not in old]
