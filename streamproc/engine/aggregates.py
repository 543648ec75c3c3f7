"""In-memory aggregates of one partition's facts, in event-time buckets, with retraction.

Everything here is derived from the lead states of the partition: it is rebuilt from them
after a rebalance and never written to Kafka itself, so it cannot double count.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import accumulate, chain, groupby, pairwise, repeat
from typing import Any

from streamproc.engine.facts import FAMILIES, Fact
from streamproc.engine.windows import (
    HOUR,
    KEEP_HOURS,
    KEEP_MINUTES,
    MINUTE,
    WindowBounds,
    WindowClock,
)

__all__ = [
    "DAYS_AHEAD_FAMILIES",
    "DIST_FAMILIES",
    "SKETCH_ERROR",
    "Acc",
    "Multiset",
    "PartitionAggregates",
    "Rollup",
    "SortedValues",
    "counted_pairs",
    "fact_diff",
    "read_bounds",
    "sketched",
]

# Families whose individual values are kept (quantiles, minimum, counts below a deadline).
DIST_FAMILIES = frozenset(name for name, family in FAMILIES.items() if family.values)
# A window that moved over more buckets than this since the last look (a long pause):
# every series counts as changed rather than each being checked.
MAX_MOVED_KEYS = 48
# The calendar periods keep values as a log-bucketed sketch (DDSketch's mapping): each value
# stands for its bucket's centre, at most this far from it relatively, so every quantile read
# from them is within 1 % of the exact one. A year of first contacts of a rep is then a few
# hundred (value, count) pairs, not one float per lead.
SKETCH_ERROR = 0.01
_GAMMA = (1 + SKETCH_ERROR) / (1 - SKETCH_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
_CENTRE = 2 / (_GAMMA + 1)
# family -> labels -> month key (as a string) -> accumulator: what evicted leads left in
# the periods, as changelogged and restored (``streamproc.state.rollup_log``)
Rollup = dict[str, dict[tuple[str, ...], dict[str, "Acc"]]]


# Each bucket centre as one float object, shared by every sketch that counts it: a year of
# 100,000 leads held 150,000 (centre, count) pairs of 601 distinct centres, a float object
# (24 bytes) each. At most ~142,000 centres span the doubles at 1 %.
_CENTRES: dict[float, float] = {}
shared_centre = _CENTRES.setdefault


def sketched(value: float) -> float:
    """The centre of the sketch bucket holding ``value`` (0 for 0; the sign kept)."""
    if value == 0:
        return 0.0
    magnitude = abs(value)
    centre = _CENTRE * _GAMMA ** math.ceil(math.log(magnitude) / _LOG_GAMMA)
    centre = centre if value > 0 else -centre
    return shared_centre(centre, centre)


class SortedValues:
    """A value multiset for reading only: its values sorted, repeats kept, in one array (8
    bytes a value, against ~90 for a dict entry and its float).

    Partials carry their multisets in this form, as the array's bytes: the owner reads
    them without parsing (JSON pairs took ~47 ms a MB), merges a key's by one sort of their
    runs (timsort merges sorted runs in ~n log k) and answers quantiles by index.
    """

    __slots__ = ("array",)

    def __init__(self, values: array[float]) -> None:
        self.array = values  # sorted

    @classmethod
    def of_runs(cls, runs: Iterable[Iterable[float]]) -> SortedValues:
        return cls(array("d", sorted(chain.from_iterable(runs))))

    @classmethod
    def of_counts(cls, counts: dict[float, int]) -> SortedValues:
        return cls.of_runs(repeat(value, n) for value, n in counts.items())

    def items(self) -> Iterator[tuple[float, int]]:
        """(value, how many times), in order: read as the dict it stands for."""
        for value, same in groupby(self.array):
            yield value, sum(1 for _ in same)

    def at_most(self, bound: float) -> int:
        """How many values are <= ``bound``."""
        return bisect_right(self.array, bound)

    def __len__(self) -> int:
        return len(self.array)


# A value multiset: value -> count while it changes, sorted values once frozen.
Multiset = dict[float, int] | SortedValues


def _run(values: Multiset) -> Iterable[float]:
    """The values of a multiset, repeats kept (sorted when frozen)."""
    if isinstance(values, SortedValues):
        return values.array
    return chain.from_iterable(repeat(value, n) for value, n in values.items())


class Acc:
    """A mergeable accumulator: count, total and (for distributions) a value multiset."""

    __slots__ = ("_quantiles", "count", "total", "values")

    def __init__(self, dist: bool = False) -> None:
        self.count = 0
        self.total = 0.0
        self.values: Multiset | None = {} if dist else None
        # The last quantiles asked and their answer: a merged summary is kept as long as
        # its partials do not change, and asked again every round and every scrape.
        self._quantiles: tuple[tuple[float, ...], list[float]] | None = None

    @classmethod
    def merged(cls, accs: Sequence[Acc], counted: bool = False) -> Acc:
        """One accumulator of all of ``accs``, its values frozen (``SortedValues``): sorted
        once from all their runs, not merged pairwise. ``counted`` (the periods'
        sketches, a few values many times each): the counts add up in a dict, nothing is
        expanded (read it, do not change it)."""
        multisets = [acc.values for acc in accs if acc.values is not None]
        return cls.of_parts(
            sum(acc.count for acc in accs), sum(acc.total for acc in accs), multisets, counted
        )

    @classmethod
    def of_parts(
        cls,
        count: int,
        total: float,
        multisets: Sequence[Multiset],
        counted: bool = False,
        fresh: bool = False,
    ) -> Acc:
        """``merged`` from the parts' count, total and multisets. ``fresh``: the multisets
        were read for this call and nobody else holds them, so one alone is taken as it is
        when it already has the form the result needs."""
        out = cls()
        out.count, out.total = count, total
        if not multisets:
            return out
        only = multisets[0] if fresh and len(multisets) == 1 else None
        if counted:
            if isinstance(only, dict):
                out.values = only
                return out
            # the values only: ``merge`` would add each count and total a second time
            values: dict[float, int] = {}
            for multiset in multisets:
                for value, n in multiset.items():
                    values[value] = values.get(value, 0) + n
            out.values = values
        elif isinstance(only, SortedValues):
            out.values = only
        else:
            out.values = SortedValues.of_runs(_run(m) for m in multisets)
        return out

    def sorted_values(self) -> array[float]:
        """The values sorted, repeats kept (empty for an accumulator without values)."""
        values = self.values
        if isinstance(values, SortedValues):
            return values.array
        return SortedValues.of_counts(values or {}).array

    def add(self, value: float, sign: int, kept: float | None = None) -> None:
        """Count ``value`` ``sign`` times; the multiset keeps ``kept`` for it when given (a
        sketch bucket's centre), the total stays exact."""
        self._quantiles = None
        self.count += sign
        self.total += value * sign
        values = self.values
        if values is not None:
            assert isinstance(values, dict), "a frozen accumulator is read only"
            if kept is None:
                kept = value
            n = values.get(kept, 0) + sign
            if n:
                values[kept] = n
            else:
                del values[kept]

    def add_sketched(self, value: float, sign: int) -> None:
        """``add``, the value kept as its sketch bucket's centre (``sketched``)."""
        self.add(value, sign, sketched(value) if self.values is not None else None)

    def merge(self, other: Acc) -> None:
        self._quantiles = None
        self.count += other.count
        self.total += other.total
        if other.values:
            if self.values is None:
                self.values = {}
            values = self.values
            assert isinstance(values, dict), "a frozen accumulator is read only"
            theirs = other.values
            if not isinstance(theirs, dict):
                for value, n in theirs.items():
                    values[value] = values.get(value, 0) + n
                return
            # In C, not value by value: the values of two partitions are mostly distinct,
            # so add only the counts of the few both hold. Four of 100,000 values merged
            # in 60 ms against 81 value by value; merging was among the owner's top costs.
            both = {value: values[value] for value in values.keys() & theirs.keys()}
            values.update(theirs)
            for value, n in both.items():
                values[value] += n

    def take_out_sketched(self, other: Acc) -> None:
        """Take ``other`` (exact values) out of this sketched, counted accumulator (a
        period's months, ``_Months.merge``): its values by their sketch centres."""
        self._quantiles = None
        self.count -= other.count
        self.total = _less(self.total, other.total)
        values = self.values
        if values is None or not other.values:
            return
        assert isinstance(values, dict), "a frozen accumulator is read only"
        for value, n in other.values.items():
            centre = sketched(value)
            left = values.get(centre, 0) - n
            if left:
                values[centre] = left
            else:
                values.pop(centre, None)

    def at_most(self, bound: float) -> int:
        """How many values are <= ``bound``."""
        values = self.values
        if not values:
            return 0
        if isinstance(values, SortedValues):
            return values.at_most(bound)
        return sum(n for value, n in values.items() if value <= bound)

    def smallest(self) -> float | None:
        values = self.values
        if not values:
            return None
        return values.array[0] if isinstance(values, SortedValues) else min(values)

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Each q-quantile of the value multiset, interpolated between closest ranks
        (numpy's default): by index when frozen, else looked up in the running counts of
        the distinct values, without expanding the multiset (expanding and sorting it was
        the publish round's largest cost at 100,000 leads)."""
        asked = tuple(qs)
        if self._quantiles is not None and self._quantiles[0] == asked:
            return list(self._quantiles[1])
        out = self._quantiles_of(asked)
        self._quantiles = (asked, out)
        return list(out)

    def _quantiles_of(self, qs: Sequence[float]) -> list[float]:
        values = self.values or {}
        if isinstance(values, SortedValues):
            ordered = values.array
            at: Callable[[int], float] = ordered.__getitem__
            last = len(ordered) - 1
        else:
            distinct = sorted(values)
            running = list(accumulate(map(values.__getitem__, distinct)))

            def at(rank: int) -> float:
                return distinct[bisect_right(running, rank)]

            last = running[-1] - 1 if running else -1
        if last < 0:
            return [math.nan] * len(qs)
        out = []
        for q in qs:
            pos = last * q
            lo = math.floor(pos)
            low, high = at(lo), at(min(lo + 1, last))
            out.append(low + (high - low) * (pos - lo))
        return out


def fact_diff(old: Iterable[Fact], new: Iterable[Fact]) -> tuple[list[Fact], list[Fact]]:
    """(retract, add): the multiset difference between a lead's old and new facts."""
    old, new = list(old), list(new)
    if old == new:
        return [], []
    before, after = set(old), set(new)
    if len(before) == len(old) and len(after) == len(new):
        # no fact twice (most leads): looked up in sets, in their order (the totals' float
        # rounding does not depend on string hashes); the loop below took ~5 % of the
        # engine's time in-process on the bench history
        return [f for f in old if f not in after], [f for f in new if f not in before]
    counts: dict[Fact, int] = {}
    for f in old:
        counts[f] = counts.get(f, 0) - 1
    for f in new:
        counts[f] = counts.get(f, 0) + 1
    retract: list[Fact] = []
    add: list[Fact] = []
    for f, n in counts.items():
        if n < 0:
            retract.extend([f] * -n)
        elif n > 0:
            add.extend([f] * n)
    return retract, add


# Zeros kept past a level's newest key: time moves forward, and growing the arrays by one
# key at a time (a new minute or hour of each series) took ~12 % of the engine's time.
_SPARE_KEYS = 8
# The counts of every level without buckets in its arrays: never filled, only replaced
# (``_Buckets._reach``). A year of periods held ~40,000 such levels (series whose minutes,
# hours, days or kept months are empty), 80 bytes an empty array: 3.1 MiB (memray).
NO_COUNTS: array[int] = array("i")
# The families whose facts land on days to come (``Family.days_ahead``: a cost's shares).
# The others' a current period reads whole (``read_bounds``): taking the days to come out
# of every series' period reads made a live series' reads ~20 % slower (in-process, the
# bench's 7 days: 0.119 - 0.125 -> 0.142 - 0.146 s for every window of every series).
DAYS_AHEAD_FAMILIES = frozenset(name for name, family in FAMILIES.items() if family.days_ahead)
# Keys this far past now's (and further) go to a level's sparse part (``_Ahead``) unless
# its arrays already reach them: a cost's shares of the days to come (a prepaid year) made
# the minute level's arrays reach a year ahead, ~525,000 minutes and 6.3 MB a series, for
# one share a day. Past the kept span (the watermarks), so that the facts of now (at most 5
# minutes ahead, events.md) stay in the arrays however long the prunes that move "now" are
# apart, up to that span.
AHEAD_MINUTES = KEEP_MINUTES
AHEAD_HOURS = KEEP_HOURS
_NEVER = 1 << 62  # the days and months: their arrays reach 731 days ahead at most, 12 bytes a day


def _less(total: float, part: float) -> float:
    """``total - part``, where ``part`` is a part of ``total`` (a period's days to come):
    0 where the difference is the float dust of the subtraction. The dust scales with
    ``total``: an invoice of 4.2e9 over the days to come left -7.6e-06 of a cost of 0."""
    left = total - part
    return 0.0 if abs(left) <= 1e-12 * abs(total) else left


class _Ahead:
    """The buckets of a level that hold something beyond its arrays, sparse: their keys
    sorted, and the count and total of each, 20 bytes a bucket (a year of daily shares is
    ~365 of them), none for the buckets between them.

    Every key here is beyond the arrays of its level (``_Buckets``): the arrays take a key
    over when they grow to reach it, and a window reads the arrays' keys, then these, in
    key order (the same sum as the arrays alone would give)."""

    __slots__ = ("counts", "keys", "totals")

    def __init__(self) -> None:
        self.keys = array("q")
        self.counts = array("i")
        self.totals = array("d")

    def add(self, key: int, value: float, sign: int) -> int:
        """Count ``value`` at ``key`` ``sign`` times; the change in buckets used."""
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            count = self.counts[i] + sign
            if count:
                self.counts[i] = count
                self.totals[i] = self.totals[i] + value * sign
                return 0
            del keys[i], self.counts[i], self.totals[i]  # its float dust goes with it
            return -1
        keys.insert(i, key)
        self.counts.insert(i, sign)
        self.totals.insert(i, 0.0 + value * sign)  # as a zeroed bucket of the arrays
        return 1

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """The indices of the keys ``lo`` to ``hi`` (inclusive): ``[i, j)``."""
        return bisect_left(self.keys, lo), bisect_right(self.keys, hi)

    def holds(self, key: int) -> bool:
        i = bisect_left(self.keys, key)
        return i < len(self.keys) and self.keys[i] == key

    def take(self, lo: int, hi: int) -> list[tuple[int, int, float]]:
        """Remove the buckets ``lo`` to ``hi`` (inclusive); (key, count, total) of each."""
        i, j = self.span(lo, hi)
        out = list(zip(self.keys[i:j], self.counts[i:j], self.totals[i:j], strict=True))
        del self.keys[i:j], self.counts[i:j], self.totals[i:j]
        return out

    def __len__(self) -> int:
        return len(self.keys)


class _Buckets:
    """One level of one series: the count and total of each bucket, in arrays.

    Index ``i`` is bucket key ``first + i``; the arrays span at most the keys the level
    keeps (120 minutes, 169 hours, 9 days, 24 months), the keys up to the level's horizon
    ahead of now (``AHEAD_MINUTES``, ``AHEAD_HOURS``; the days and months have none: a
    cost's period ends at most 731 days ahead) and ``_SPARE_KEYS`` more: 4 bytes a bucket,
    12 with totals, against ~190 for a dict entry, its key and an ``Acc`` (1.2 million of
    those at 100,000 leads and 100 reps). A fact beyond both the arrays and the horizon goes
    to ``ahead`` (sparse: ``_Ahead``), None while there is none. ``totals`` is None while
    every value was 1.0 (most families count): the totals are the counts. ``values`` (the
    distribution families only): each bucket's values, unsorted, whether in the arrays or
    ahead.
    """

    __slots__ = ("ahead", "counts", "first", "totals", "used", "values")
    unborn = False  # the shared empty level of its kind (``_Unborn``): a series' own first

    def __init__(self, dist: bool) -> None:
        self.first = 0
        self.counts = NO_COUNTS
        self.totals: array[float] | None = None
        self.used = 0  # buckets with a count, in the arrays and ahead
        self.values: dict[int, Any] | None = {} if dist else None  # key -> its values
        self.ahead: _Ahead | None = None

    def add(self, key: int, value: float, sign: int, horizon: int = _NEVER) -> None:
        """Count ``value`` at ``key`` ``sign`` times: in the arrays when they reach ``key``
        or ``key`` is before ``horizon`` (they grow to it), else ahead."""
        counts = self.counts
        i = key - self.first
        if not 0 <= i < len(counts):
            if key >= horizon:
                self._add_ahead(key, value, sign)
                return
            i = self._reach(key)
            counts = self.counts  # new arrays when they were empty
        count = counts[i] + sign
        counts[i] = count
        totals = self.totals
        if totals is None and value != 1.0:
            totals = self.totals = array("d", counts)
            totals[i] -= sign  # the counts already hold this fact, as 1.0
        if totals is not None:
            # at 0 the float dust of retractions goes with the last fact
            totals[i] = totals[i] + value * sign if count else 0.0
        if not count:
            self.used -= 1
        elif count == sign:
            self.used += 1
        if self.values is not None:
            self._add_value(key, value, sign)

    def _add_ahead(self, key: int, value: float, sign: int) -> None:
        ahead = self.ahead
        if ahead is None:
            ahead = self.ahead = _Ahead()
        self.used += ahead.add(key, value, sign)
        if not ahead:
            self.ahead = None
        if self.values is not None:
            self._add_value(key, value, sign)

    def _add_value(self, key: int, value: float, sign: int) -> None:
        values = self.values
        assert values is not None
        kept = values.get(key)
        if kept is None:
            kept = values[key] = array("d")
        if sign > 0:
            kept.append(value)
        else:
            kept.remove(value)
            if not kept:
                del values[key]

    def add_acc(self, key: int, acc: Acc) -> None:
        """Add a whole accumulator to bucket ``key`` (a month of a restored rollup)."""
        if not acc.count:
            return
        i = key - self.first
        if not 0 <= i < len(self.counts):
            i = self._reach(key)
        before = self._bump(i, acc.count, acc.total)
        self.used += bool(self.counts[i]) - bool(before)
        if self.values is not None and acc.values:
            self._merge_values(key, acc.values)

    def _bump(self, i: int, count: int, total: float) -> int:
        """Add ``count`` facts of sum ``total`` to the bucket at index ``i`` (not ``add``'s
        hot path: whole accumulators, buckets taken over); its count before."""
        before = self.counts[i]
        after = self.counts[i] = before + count
        if self.totals is None and total != count:
            self.totals = array("d", self.counts)
            self.totals[i] = before  # the counts stood for the totals until now
        if self.totals is not None:
            self.totals[i] = self.totals[i] + total if after else 0.0
        return before

    def _merge_values(self, key: int, values: Multiset) -> None:
        assert self.values is not None
        self.values.setdefault(key, array("d")).extend(_run(values))

    def _reach(self, key: int) -> int:
        """Grow the arrays to hold ``key`` (and take over the buckets ahead they now
        reach); its index."""
        n = len(self.counts)
        if not n:  # new arrays, not the empty ones (``NO_COUNTS`` is shared)
            self.first = key
            size = 1 + _SPARE_KEYS
            self.counts = array("i", bytes(4 * size))
            if self.totals is not None:
                self.totals = array("d", bytes(8 * size))
        else:
            self._pad(key, n)
        if self.ahead is not None:
            self._take_over(self.first, self.first + len(self.counts) - 1)
        return key - self.first

    def _pad(self, key: int, n: int) -> None:
        """Zeros in front of the arrays (down to ``key``) or behind them (past it)."""
        if key < self.first:
            pad_front, pad_back = self.first - key, 0
        else:
            pad_front, pad_back = 0, key - self.first - n + 1 + _SPARE_KEYS
        arrays: tuple[array[Any] | None, ...] = (self.counts, self.totals)
        for arr in arrays:
            if arr is None:
                continue
            zeros = array(arr.typecode, bytes(arr.itemsize * (pad_front or pad_back)))
            if pad_front:
                arr[0:0] = zeros
            else:
                arr.extend(zeros)
        if pad_front:
            self.first = key

    def _take_over(self, lo: int, hi: int) -> None:
        """Move the buckets ahead from ``lo`` to ``hi`` (inside the arrays, all zero there)
        into the arrays."""
        ahead = self.ahead
        assert ahead is not None
        for key, count, total in ahead.take(lo, hi):
            self._bump(key - self.first, count, total)  # a zero bucket: its count and total
        if not ahead:
            self.ahead = None

    def holds(self, key: int) -> bool:
        i = key - self.first
        if 0 <= i < len(self.counts):
            return self.counts[i] != 0
        return self.ahead is not None and self.ahead.holds(key)

    def holds_any(self, lo: int, hi: int) -> bool:
        """Whether a bucket from ``lo`` to ``hi`` (inclusive) holds something."""
        a, b = max(lo - self.first, 0), min(hi - self.first + 1, len(self.counts))
        if a < b and any(self.counts[a:b]):
            return True
        ahead = self.ahead
        if ahead is None:
            return False
        i, j = ahead.span(lo, hi)
        return i < j

    def merge(self, lo: int, hi: int) -> Acc:
        """The buckets ``lo`` to ``hi`` (inclusive) merged."""
        out = Acc(self.values is not None)
        a = max(lo - self.first, 0)
        b = min(hi - self.first + 1, len(self.counts))
        if a < b:
            out.count = sum(self.counts[a:b])
            out.total = float(out.count) if self.totals is None else sum(self.totals[a:b])
        ahead = self.ahead
        if ahead is not None:
            i, j = ahead.span(lo, hi)
            if i < j:
                # after the arrays' keys, as one sum: what the arrays reaching them gave
                dense = (
                    [float(out.count)] if self.totals is None else self.totals[a:b] if a < b else ()
                )
                out.count += sum(ahead.counts[i:j])
                out.total = sum(chain(dense, ahead.totals[i:j]))
        if self.values is not None and out.count:
            out.values = self._values_in(self.values, lo, hi)
        return out

    def sums(self, lo: int, hi: int) -> tuple[int, float]:
        """The count and total of the buckets ``lo`` to ``hi`` (inclusive): ``merge``
        without an ``Acc``, for the families without values (a publish round reads every
        window of every changed series: ~127,000 at 20,000 leads)."""
        if self.ahead is not None:
            acc = self.merge(lo, hi)
            return acc.count, acc.total
        first = self.first
        a = lo - first if lo > first else 0
        b = min(hi - first + 1, len(self.counts))
        if a >= b:
            return 0, 0.0
        count = sum(self.counts[a:b])
        return count, float(count) if self.totals is None else sum(self.totals[a:b])

    @staticmethod
    def _values_in(values: dict[int, Any], lo: int, hi: int) -> Multiset:
        return SortedValues.of_runs(v for k, v in values.items() if lo <= k <= hi)

    def drop_before(self, key: int) -> None:
        dropped = 0  # buckets ahead dropped (time went past them without the arrays)
        ahead = self.ahead
        if ahead is not None:
            dropped = len(ahead.take(-_NEVER, key - 1))
            self.used -= dropped
            if not ahead:
                self.ahead = None
        n = min(key - self.first, len(self.counts))
        if n <= 0 and not dropped:
            return
        if self.values is not None:
            for k in [k for k in self.values if k < key]:
                del self.values[k]
        if n <= 0:
            return
        self.used -= sum(1 for c in self.counts[:n] if c)
        del self.counts[:n]
        if self.totals is not None:
            del self.totals[:n]
        self.first = key
        if self.used == len(self.ahead or ()):
            # nothing left in the arrays: start afresh wherever the next fact lands
            self.counts = NO_COUNTS
            self.totals = None


class _SketchedBuckets(_Buckets):
    """Buckets whose values are counts of their sketch bucket's centre (``sketched``): a
    few hundred distinct values a month, however many leads. A period's quantile merges
    those counts; sorting every value of a year's kept leads took ~5 % of a worker's time
    in each publish round. The kept leads' months: a dict of counts a month (every fact of
    a kept lead retracts and adds here: the hot path)."""

    __slots__ = ()

    def _add_value(self, key: int, value: float, sign: int) -> None:
        values = self.values
        assert values is not None
        counts: dict[float, int] | None = values.get(key)
        if counts is None:
            counts = values[key] = {}
        centre = sketched(value)
        n = counts.get(centre, 0) + sign
        if n:
            counts[centre] = n
            return
        del counts[centre]
        if not counts:
            del values[key]

    def _merge_values(self, key: int, values: Multiset) -> None:
        assert self.values is not None
        counts: dict[float, int] = self.values.setdefault(key, {})
        for value, n in values.items():  # sketch centres already (``Acc.add_sketched``)
            value = shared_centre(value, value)
            counts[value] = counts.get(value, 0) + n

    @staticmethod
    def _values_in(values: dict[int, Any], lo: int, hi: int) -> Multiset:
        out: dict[float, int] = {}
        for key, counts in values.items():
            if lo <= key <= hi:
                for value, n in counts.items():
                    out[value] = out.get(value, 0) + n
        return out

    @staticmethod
    def month_items(month: Any) -> Iterable[tuple[float, int]]:
        """A month's (centre, count) pairs, as a snapshot writes them."""
        return month.items()  # type: ignore[no-any-return]

    @staticmethod
    def month_of(centres: array[float], counts: array[int]) -> Any:
        """A month's counts from a snapshot's two arrays."""
        return {shared_centre(v, v): n for v, n in zip(centres, counts, strict=True)}


class _ArchivedBuckets(_SketchedBuckets):
    """The archive's months (what forgotten leads left): written when a lead is forgotten
    or a rollup restored, read by every period window. A month's counts are one array of
    (centre, count) pairs sorted by centre (``_count_in``): 16 bytes a pair, ~42 in a
    dict; a year of 100,000 leads holds ~130,000 of them in ~5,300 archived months. Kept
    months stay dicts: a pair found by bisection (~1 us) would slow the hot path."""

    __slots__ = ()

    def _add_value(self, key: int, value: float, sign: int) -> None:
        values = self.values
        assert values is not None
        pairs: array[float] | None = values.get(key)
        if pairs is None:
            pairs = values[key] = array("d")
        _count_in(pairs, sketched(value), sign)
        if not pairs:
            del values[key]

    def _merge_values(self, key: int, values: Multiset) -> None:
        assert self.values is not None
        pairs: array[float] = self.values.setdefault(key, array("d"))
        for value, n in values.items():  # sketch centres already (``Acc.add_sketched``)
            _count_in(pairs, value, n)
        if not pairs:
            del self.values[key]

    @staticmethod
    def _values_in(values: dict[int, Any], lo: int, hi: int) -> Multiset:
        out: dict[float, int] = {}
        for key, pairs in values.items():
            if lo <= key <= hi:
                for value, n in zip(pairs[0::2], pairs[1::2], strict=True):
                    out[value] = out.get(value, 0) + int(n)
        return out

    @staticmethod
    def month_items(month: Any) -> Iterable[tuple[float, int]]:
        return counted_pairs(month)

    @staticmethod
    def month_of(centres: array[float], counts: array[int]) -> Any:
        if all(a < b for a, b in pairwise(centres)):  # as written: interleaved at once
            pairs = array("d", bytes(16 * len(centres)))
            pairs[0::2] = centres
            pairs[1::2] = array("d", counts)
            return pairs
        pairs = array("d")
        for value, n in zip(centres, counts, strict=True):
            _count_in(pairs, value, n)
        return pairs


def _count_in(pairs: array[float], centre: float, n: int) -> None:
    """Count ``centre`` ``n`` more times in ``pairs`` (centre, count; sorted by centre): a
    new pair in its place, none left at a count of 0."""
    with memoryview(pairs) as whole:
        centres = whole[0::2]  # a view: found in ~log2(pairs) reads, nothing copied
        i = bisect_left(centres, centre)
        found = i < len(centres) and centres[i] == centre
        centres.release()  # the array cannot grow while a view of it is held
    j = 2 * i
    if not found:
        pairs[j:j] = array("d", (centre, n))
        return
    left = pairs[j + 1] + n
    if left:
        pairs[j + 1] = left
    else:
        del pairs[j : j + 2]


def counted_pairs(pairs: array[float]) -> Iterator[tuple[float, int]]:
    """An archived month's (centre, count) pairs; the centres shared (``shared_centre``)."""
    for i in range(0, len(pairs), 2):
        centre = pairs[i]
        yield shared_centre(centre, centre), int(pairs[i + 1])


class _Unborn:
    """The empty level every series starts with at each level and goes back to once a
    prune has emptied it: one shared instance of each kind (``_UNBORN``), read as any empty
    level is, never written (a series grows its own first: ``_Series.grown``). A year's
    label combinations mostly hold archived months alone: five levels of their own were
    400 bytes a series (80 each, traced), ~6.5 MiB of a year's 16,656 series."""

    __slots__ = ()
    unborn = True

    def add(self, key: int, value: float, sign: int, horizon: int = _NEVER) -> None:
        raise AssertionError("a shared empty level is never written: grow the series' own")

    def add_acc(self, key: int, acc: Acc) -> None:
        raise AssertionError("a shared empty level is never written: grow the series' own")


class _UnbornBuckets(_Unborn, _Buckets):
    __slots__ = ()


class _UnbornSketched(_Unborn, _SketchedBuckets):
    __slots__ = ()


class _UnbornArchived(_Unborn, _ArchivedBuckets):
    __slots__ = ()


# Read only, as ``NO_COUNTS``: the values of every shared empty distribution level
_NO_VALUES: dict[int, Any] = {}
# the shared empty level's kind -> the kind a series grows from it
_GROWN: dict[type[_Buckets], type[_Buckets]] = {
    _UnbornBuckets: _Buckets,
    _UnbornSketched: _SketchedBuckets,
    _UnbornArchived: _ArchivedBuckets,
}


def _unborn(kind: type[_Buckets], dist: bool) -> _Buckets:
    level = kind(dist)
    if level.values is not None:
        level.values = _NO_VALUES
    return level


# (the kind a series grows, dist) -> the shared empty level of that kind
_UNBORN: dict[tuple[type[_Buckets], bool], _Buckets] = {
    (grown, dist): _unborn(unborn, dist)
    for unborn, grown in _GROWN.items()
    for dist in (False, True)
}


def own_level(level: _Buckets) -> _Buckets:
    """A new, empty level of its own of ``level``'s kind (the one grown from it when
    ``level`` is a shared empty one)."""
    return _GROWN.get(type(level), type(level))(level.values is not None)


class _Months:
    """The month buckets of one series (the calendar periods), in two parts: ``kept``, the
    facts of the leads still kept (retracted and re-added as they change, rebuilt from
    them after a take-over), and ``archive``, what evicted leads left (changelogged as
    rollups, restored after a take-over). A lead's facts are in one of the two, never both.

    At most 24 months per series (``last_year`` to now): memory grows with the series, not
    with the leads of the periods. Values (distribution families) are sketched.
    """

    __slots__ = ("archive", "kept")

    def __init__(self, dist: bool) -> None:
        # In arrays as the other levels: an ``Acc`` per month cost ~8 % of the engine's
        # rate (its add, the dict of its sketch); the kept leads' values are few. The
        # archive too: an ``Acc`` per archived month (its object, its key and its total
        # as Python objects) was ~200 bytes, 22 MB of a year's 113,755 archived months.
        self.kept = _UNBORN[_SketchedBuckets, dist]
        self.archive = _UNBORN[_ArchivedBuckets, dist]

    def grown_kept(self) -> _Buckets:
        """``kept``, its own (grown from the shared empty one on its first fact)."""
        if self.kept.unborn:
            self.kept = own_level(self.kept)
        return self.kept

    def grown_archive(self) -> _Buckets:
        """``archive``, its own (as ``grown_kept``)."""
        if self.archive.unborn:
            self.archive = own_level(self.archive)
        return self.archive

    def add(self, key: int, value: float, sign: int, archived: bool = False) -> None:
        (self.grown_archive() if archived else self.grown_kept()).add(key, value, sign)

    @property
    def used(self) -> bool:
        return bool(self.kept.used or self.archive.used)

    def holds(self, key: int) -> bool:
        return self.kept.holds(key) or self.archive.holds(key)

    def merge(self, lo: int, hi: int) -> Acc:
        """Months ``lo`` to ``hi`` (inclusive), kept and archived, merged (values counted)."""
        out = self.kept.merge(lo, hi)  # a new Acc, its values counted (not frozen)
        if self.archive.used:
            out.merge(self.archive.merge(lo, hi))
        return out

    def sums(self, lo: int, hi: int) -> tuple[int, float]:
        """``merge``'s count and total (see ``_Buckets.sums``)."""
        count, total = self.kept.sums(lo, hi)
        if self.archive.used:
            archived, archived_total = self.archive.sums(lo, hi)
            return count + archived, total + archived_total
        return count, total

    def archived(self) -> Iterator[int]:
        """The months the archive holds."""
        archive = self.archive
        return (archive.first + i for i, count in enumerate(archive.counts) if count)

    def drop_before(self, key: int) -> list[int]:
        """Forget months before ``key``; returns the archived months dropped."""
        self.kept.drop_before(key)
        dropped = [k for k in self.archived() if k < key]
        self.archive.drop_before(key)
        self.kept = _emptied(self.kept)
        self.archive = _emptied(self.archive)
        return dropped


def _emptied(level: _Buckets) -> _Buckets:
    """``level``, or the shared empty one of its kind when it holds nothing."""
    if level.unborn or level.used or level.values or level.counts is not NO_COUNTS:
        return level
    return _UNBORN[type(level), level.values is not None]


class _Series:
    """The buckets of one (family, labels) at the four levels: minutes (``1h``), hours
    (``7d``), local days (``today``) and local months (the calendar periods). A level is
    the shared empty one until its first fact (``grown``), and again once pruned empty."""

    __slots__ = ("M", "d", "h", "m")

    def __init__(self, dist: bool) -> None:
        unborn = _UNBORN[_Buckets, dist]
        self.m = unborn
        self.h = unborn
        self.d = unborn
        self.M = _Months(dist)

    def grown(self, name: str) -> _Buckets:
        """Level ``name`` (``m``, ``h`` or ``d``), the series' own: grown from the shared
        empty one if it is that."""
        level: _Buckets = getattr(self, name)
        if level.unborn:
            level = own_level(level)
            setattr(self, name, level)
        return level

    def level(self, name: str) -> _Buckets | _Months:
        if name == "M":
            return self.M
        return self.m if name == "m" else self.h if name == "h" else self.d

    def window(self, bounds: WindowBounds, values: bool = True) -> Acc | None:
        """The window's accumulator, or None when no bucket of it holds anything.
        ``values=False``: its count and total only (no multiset, however the family)."""
        if values and self.m.values is not None:
            acc = self.merge(bounds)
            return acc if acc.count else None
        count, total = self.level(bounds.level).sums(bounds.first_key, bounds.last_key)
        later = bounds.later_days
        if later is not None and self.d.holds_any(*later):
            later_count, later_total = self.d.sums(*later)
            count, total = count - later_count, _less(total, later_total)
        if not count:
            return None
        acc = Acc()
        acc.count, acc.total = count, total
        return acc

    def merge(self, bounds: WindowBounds) -> Acc:
        """The window merged from its buckets (an empty Acc when none), without what landed
        on the period's days after today (``WindowBounds.later_days``: the day level keeps
        every day ahead, so it knows what of the months is still to come)."""
        acc = self.level(bounds.level).merge(bounds.first_key, bounds.last_key)
        later = bounds.later_days
        # most series hold no day to come: a look at the arrays' last spare keys, where a
        # merge (its Acc, its values) made every period read of a live series ~2x slower
        if later is not None and self.d.holds_any(*later):
            to_come = self.d.merge(*later)
            if to_come.count:
                acc.take_out_sketched(to_come)
        return acc

    def drop_before(self, minute: int, hour: int, day: int, month: int) -> list[int]:
        """Forget the buckets each level no longer keeps, and the levels left empty;
        returns the archived months dropped."""
        self.m.drop_before(minute)
        self.h.drop_before(hour)
        self.d.drop_before(day)
        self.m, self.h, self.d = _emptied(self.m), _emptied(self.h), _emptied(self.d)
        return self.M.drop_before(month)

    def empty(self) -> bool:
        return not (self.m.used or self.h.used or self.d.used or self.M.used)


def read_bounds(family: str, all_bounds: Sequence[WindowBounds]) -> Sequence[WindowBounds]:
    """The bounds a family's series are read with: a current period's days to come are
    looked for only where facts land on them (``DAYS_AHEAD_FAMILIES``)."""
    if family in DAYS_AHEAD_FAMILIES:
        return all_bounds
    return [replace(b, later_days=None) if b.later_days else b for b in all_bounds]


class PartitionAggregates:
    """Windowed and live aggregates of the facts of one partition's leads."""

    def __init__(self, clock: WindowClock, now: float) -> None:
        self.clock = clock
        self.windowed: dict[str, dict[tuple[str, ...], _Series]] = {}
        self.live: dict[str, dict[tuple[str, ...], Acc]] = {}
        self.wm_minute, self.wm_hour, self.wm_day = clock.watermarks(now)
        self.wm_period = clock.period_watermark(now)
        # The first minute and hour keys past the levels' horizons: a fact there goes to
        # the level's sparse part, unless its arrays reach it (``_Buckets.add``)
        self.ahead_minute, self.ahead_hour = self._horizons(now)
        # What evictions added to the archive since ``take_archived`` (a rollup of the
        # changes), and the archived months pruned since (their records go)
        self._archived: Rollup = {}
        self._archived_months: set[int] = set()
        self._dropped_months: set[int] = set()
        # (family, labels) whose accumulators facts changed since ``take_touched``
        self.touched: set[tuple[str, tuple[str, ...]]] = set()
        self._taken_at: tuple[WindowBounds, ...] | None = None  # bounds of the last take

    def apply(self, facts: Iterable[Fact], sign: int) -> None:
        # The hot path of the engine: locals and inlined bucket keys on purpose.
        day, month = self.clock.day, self.clock.month
        windowed = self.windowed
        wm_minute, wm_hour, wm_day = self.wm_minute, self.wm_hour, self.wm_day
        wm_period = self.wm_period  # the oldest of the four
        ahead_minute, ahead_hour = self.ahead_minute, self.ahead_hour
        touch = self.touched.add
        for family, labels, t, value in facts:
            if t is None:
                self._live(family, labels, value, sign)
                touch((family, labels))
                continue
            if t < wm_period:
                continue  # past retention: in the lead state, not in any window
            touch((family, labels))
            per_family = windowed.get(family)
            if per_family is None:
                per_family = windowed[family] = {}
            series = per_family.get(labels)
            if series is None:
                series = per_family[labels] = _Series(family in DIST_FAMILIES)
            # a level's own is grown at its first fact: the checks inline, the hot path
            if t >= wm_minute:
                level = series.m
                (series.grown("m") if level.unborn else level).add(
                    int(t // MINUTE), value, sign, ahead_minute
                )
            if t >= wm_hour:
                level = series.h
                (series.grown("h") if level.unborn else level).add(
                    int(t // HOUR), value, sign, ahead_hour
                )
            if t >= wm_day:
                level = series.d
                (series.grown("d") if level.unborn else level).add(day(t), value, sign)
            months = series.M
            level = months.kept
            (months.grown_kept() if level.unborn else level).add(month(t), value, sign)
            if sign < 0 and series.empty():
                del per_family[labels]

    def _live(self, family: str, labels: tuple[str, ...], value: float, sign: int) -> None:
        per_family = self.live.get(family)
        if per_family is None:
            per_family = self.live[family] = {}
        acc = per_family.get(labels)
        if acc is None:
            acc = per_family[labels] = Acc(family in DIST_FAMILIES)
        acc.add(value, sign)
        if acc.count == 0:
            del per_family[labels]

    def _horizons(self, now: float) -> tuple[int, int]:
        """The first minute and hour keys past the levels' horizons ahead of ``now``."""
        return self.clock.minute(now) + AHEAD_MINUTES, self.clock.hour(now) + AHEAD_HOURS

    def prune(self, now: float) -> None:
        """Drop buckets older than each level keeps; facts that old are no longer added."""
        ahead_minute, ahead_hour = self._horizons(now)
        self.ahead_minute = max(self.ahead_minute, ahead_minute)
        self.ahead_hour = max(self.ahead_hour, ahead_hour)
        wm_m, wm_h, wm_d = self.clock.watermarks(now)
        self.wm_minute = max(self.wm_minute, wm_m)
        self.wm_hour = max(self.wm_hour, wm_h)
        self.wm_day = max(self.wm_day, wm_d)
        self.wm_period = max(self.wm_period, self.clock.period_watermark(now))
        first_m = self.clock.minute(self.wm_minute)
        first_h = self.clock.hour(self.wm_hour)
        first_d = self.clock.day(self.wm_day)
        first_month = self.clock.month(self.wm_period)
        for per_family in self.windowed.values():
            for labels in list(per_family):
                series = per_family[labels]
                dropped = series.drop_before(first_m, first_h, first_d, first_month)
                self._dropped_months.update(dropped)
                if series.empty():
                    del per_family[labels]

    # --- the archive: what evicted leads left in the periods --------------------------------

    def _series(self, family: str, labels: tuple[str, ...]) -> _Series:
        per_family = self.windowed.setdefault(family, {})
        series = per_family.get(labels)
        if series is None:
            series = per_family[labels] = _Series(family in DIST_FAMILIES)
        return series

    def archive(self, facts: Iterable[Fact]) -> None:
        """The facts of a lead being forgotten (retracted with ``apply(facts, -1)``): their
        part in the periods stays, in the archive."""
        month = self.clock.month
        for family, labels, t, value in facts:
            if t is None or t < self.wm_period:
                continue
            key = month(t)
            self._series(family, labels).M.add(key, value, 1, archived=True)
            per_window = self._archived.setdefault(family, {}).setdefault(labels, {})
            acc = per_window.get(str(key))
            if acc is None:
                acc = per_window[str(key)] = Acc(family in DIST_FAMILIES)
            acc.add_sketched(value, 1)
            self._archived_months.add(key)
            self.touched.add((family, labels))

    def take_archived(self) -> tuple[Rollup, set[int], set[int]]:
        """(what the archive got since the last call, the months it changed, the archived
        months pruned since), and start afresh."""
        out = (self._archived, self._archived_months, self._dropped_months)
        self._archived, self._archived_months, self._dropped_months = {}, set(), set()
        return out

    def archived_month(self, key: int) -> Rollup:
        """Everything the archive holds for month ``key``."""
        out: Rollup = {}
        for family, per_family in self.windowed.items():
            for labels, series in per_family.items():
                archive = series.M.archive
                if archive.holds(key):
                    out.setdefault(family, {})[labels] = {str(key): archive.merge(key, key)}
        return out

    def restore(self, rollup: Rollup) -> None:
        """Add a rollup (a month's record, a pending eviction's) to the archive."""
        # The months before last_year's are pruned: compared by number, not by a datetime
        # per window of every series (a year's 48 month records, decoded and restored:
        # 1.35 - 1.86 s of process time with the datetimes, 1.06 - 1.18 s without).
        first = self.clock.month(self.wm_period)
        for family, per_labels in rollup.items():
            if family not in FAMILIES:
                continue  # a family this version no longer derives
            for labels, per_window in per_labels.items():
                archive = self._series(family, labels).M.grown_archive()
                for window, acc in per_window.items():
                    key = int(window)
                    if key >= first:
                        archive.add_acc(key, acc)
                self.touched.add((family, labels))

    def take_touched(
        self, all_bounds: Sequence[WindowBounds]
    ) -> set[tuple[str, tuple[str, ...]]] | None:
        """(family, labels) whose window or live accumulators may differ from what they were
        at the last call (None: any may, e.g. at the first call), and start afresh.

        Facts applied since touch theirs; a window that moved (``all_bounds`` vs those of the
        last call) changes the series holding a bucket that left it or entered it.
        """
        touched, self.touched = self.touched, set()
        before, self._taken_at = self._taken_at, tuple(all_bounds)
        if before is None or len(before) != len(all_bounds):
            return None
        moved: list[tuple[str, list[int]]] = []
        # A day of a current period that came (midnight) is today's: the move of ``today``
        # touches the series holding it, so the periods' ``later_days`` need no look.
        for old, new in zip(before, all_bounds, strict=True):
            if old.level != new.level:
                return None
            if (old.first_key, old.last_key) == (new.first_key, new.last_key):
                continue
            crossed = set(range(old.first_key, old.last_key + 1)) ^ set(
                range(new.first_key, new.last_key + 1)
            )
            if len(crossed) > MAX_MOVED_KEYS:
                return None  # a long pause: not worth sorting out
            moved.append((new.level, sorted(crossed)))
        if moved:
            for family, per_labels in self.windowed.items():
                for labels, series in per_labels.items():
                    for level, keys in moved:
                        holds = series.level(level).holds
                        if any(holds(key) for key in keys):
                            touched.add((family, labels))
                            break
        return touched

    def window_accs(
        self, family: str, bounds: WindowBounds, values: bool = True
    ) -> Iterator[tuple[tuple[str, ...], Acc]]:
        [bounds] = read_bounds(family, [bounds])
        for labels, series in self.windowed.get(family, {}).items():
            acc = series.window(bounds, values)
            if acc is not None and (acc.count or acc.total):
                yield labels, acc

    def live_accs(self, family: str) -> Iterator[tuple[tuple[str, ...], Acc]]:
        yield from self.live.get(family, {}).items()
