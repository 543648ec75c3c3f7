"""In-memory aggregates of one partition's facts, in event-time buckets, with retraction.

Everything here is derived from the lead states of the partition: it is rebuilt from them
after a rebalance and never written to Kafka itself, so it cannot double count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from streamproc.facts import Fact
from streamproc.windows import HOUR, MINUTE, WindowBounds, WindowClock

__all__ = ["DIST_FAMILIES", "Acc", "PartitionAggregates", "fact_diff"]

# Families whose individual values are kept (quantiles, minimum, counts below a deadline).
DIST_FAMILIES = frozenset(
    {"first_contact", "stage_exit", "awaiting_since", "awaiting_risk", "awaiting_due"}
)
# A window that moved over more buckets than this since the last look (a long pause):
# every series counts as changed rather than each being checked.
MAX_MOVED_KEYS = 48


class Acc:
    """A mergeable accumulator: count, total and (for distributions) a value multiset."""

    __slots__ = ("count", "total", "values")

    def __init__(self, dist: bool = False) -> None:
        self.count = 0
        self.total = 0.0
        self.values: dict[float, int] | None = {} if dist else None

    def add(self, value: float, sign: int) -> None:
        self.count += sign
        self.total += value * sign
        values = self.values
        if values is not None:
            n = values.get(value, 0) + sign
            if n:
                values[value] = n
            else:
                del values[value]

    def merge(self, other: Acc) -> None:
        self.count += other.count
        self.total += other.total
        if other.values:
            if self.values is None:
                self.values = {}
            for value, n in other.values.items():
                self.values[value] = self.values.get(value, 0) + n

    def sorted_values(self) -> list[float]:
        out: list[float] = []
        for value, n in sorted((self.values or {}).items()):
            out.extend([value] * n)
        return out

    def to_wire(self) -> list:  # type: ignore[type-arg]
        # (value, n) tuples: orjson writes them as the same [v, n] arrays as lists, and
        # building them is the C-level dict iteration, not a Python loop.
        values = list(self.values.items()) if self.values is not None else None
        return [self.count, self.total, values]

    @classmethod
    def from_wire(cls, row: list) -> Acc:  # type: ignore[type-arg]
        acc = cls(dist=row[2] is not None)
        acc.count, acc.total = row[0], row[1]
        if row[2] is not None:
            # Values are written as JSON floats (``1.0``) and counts as integers, so they
            # read back as float and int; dict() pairs them up without a Python loop.
            acc.values = dict(row[2])
        return acc


def fact_diff(old: Iterable[Fact], new: Iterable[Fact]) -> tuple[list[Fact], list[Fact]]:
    """(retract, add): the multiset difference between a lead's old and new facts."""
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


def _bump(level: dict[int, Acc], key: int, value: float, sign: int, dist: bool) -> None:
    acc = level.get(key)
    if acc is None:
        acc = level[key] = Acc(dist)
    acc.add(value, sign)
    if acc.count == 0:
        del level[key]


def _add_cached(cached: _Cached, key: int, value: float, sign: int) -> None:
    """A fact bumped into bucket ``key``: into the cached window too if the key is in it."""
    if cached.first_key <= key <= cached.last_key:
        acc = cached.acc
        acc.add(value, sign)
        if acc.count == 0:
            # Every bucket of the range is gone (they are deleted at 0): so is the window,
            # float dust of the retractions included, as a fresh merge would say.
            acc.total = 0.0


class _Cached:
    """A window's merged accumulator and the bucket range it was merged over."""

    __slots__ = ("acc", "first_key", "last_key")

    def __init__(self, first_key: int, last_key: int, acc: Acc) -> None:
        self.first_key = first_key
        self.last_key = last_key
        self.acc = acc


class _Series:
    """The buckets of one (family, labels) at the three levels, and the merged windows.

    ``cm`` / ``ch``: the ``1h`` / ``7d`` window merged over its minute / hour buckets. It is
    kept equal to that merge: a fact bumped into a bucket of its range is added to it too,
    and it is merged afresh only when the window's range moves (every minute / hour) or a
    prune dropped buckets. ``today`` is one day bucket: it needs no merge.
    """

    __slots__ = ("ch", "cm", "d", "dist", "h", "m")

    def __init__(self, dist: bool) -> None:
        self.dist = dist
        self.m: dict[int, Acc] = {}
        self.h: dict[int, Acc] = {}
        self.d: dict[int, Acc] = {}
        self.cm: _Cached | None = None
        self.ch: _Cached | None = None

    def window(self, bounds: WindowBounds) -> Acc | None:
        """The window's accumulator, or None when no bucket of it holds anything.

        The result is live (the cache, or the day bucket itself): read it, do not keep or
        change it; the next ``apply`` changes it.
        """
        level = bounds.level
        lo, hi = bounds.first_key, bounds.last_key
        if level == "d" and lo == hi:
            return self.d.get(lo)
        cached = self.cm if level == "m" else self.ch if level == "h" else None
        if cached is None or cached.first_key != lo or cached.last_key != hi:
            cached = _Cached(lo, hi, self.merge(bounds))
            if level == "m":
                self.cm = cached
            elif level == "h":
                self.ch = cached
            else:
                return cached.acc if cached.acc.count else None
        acc = cached.acc
        return acc if acc.count else None

    def merge(self, bounds: WindowBounds) -> Acc:
        """The window merged afresh from its buckets (an empty Acc when none)."""
        level = self.m if bounds.level == "m" else self.h if bounds.level == "h" else self.d
        lo, hi = bounds.first_key, bounds.last_key
        out = Acc(self.dist)
        for key, acc in level.items():
            if lo <= key <= hi:
                out.merge(acc)
        return out

    def empty(self) -> bool:
        return not (self.m or self.h or self.d)


class PartitionAggregates:
    """Windowed and live aggregates of the facts of one partition's leads."""

    def __init__(self, clock: WindowClock, now: float) -> None:
        self.clock = clock
        self.windowed: dict[str, dict[tuple[str, ...], _Series]] = {}
        self.live: dict[str, dict[tuple[str, ...], Acc]] = {}
        self.wm_minute, self.wm_hour, self.wm_day = clock.watermarks(now)
        # (family, labels) whose accumulators facts changed since ``take_touched``
        self.touched: set[tuple[str, tuple[str, ...]]] = set()
        self._taken_at: tuple[WindowBounds, ...] | None = None  # bounds of the last take

    def apply(self, facts: Iterable[Fact], sign: int) -> None:
        # The hot path of the engine: locals and inlined bucket keys on purpose.
        day = self.clock.day
        windowed = self.windowed
        wm_minute, wm_hour, wm_day = self.wm_minute, self.wm_hour, self.wm_day
        touch = self.touched.add
        for family, labels, t, value in facts:
            if t is None:
                self._live(family, labels, value, sign)
                touch((family, labels))
                continue
            if t < wm_hour and t < wm_day:
                continue  # past retention: in the lead state, not in any window
            touch((family, labels))
            per_family = windowed.get(family)
            if per_family is None:
                per_family = windowed[family] = {}
            series = per_family.get(labels)
            if series is None:
                series = per_family[labels] = _Series(family in DIST_FAMILIES)
            if t >= wm_minute:
                key = int(t // MINUTE)
                _bump(series.m, key, value, sign, series.dist)
                if series.cm is not None:
                    _add_cached(series.cm, key, value, sign)
            if t >= wm_hour:
                key = int(t // HOUR)
                _bump(series.h, key, value, sign, series.dist)
                if series.ch is not None:
                    _add_cached(series.ch, key, value, sign)
            if t >= wm_day:
                _bump(series.d, day(t), value, sign, series.dist)
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

    def prune(self, now: float) -> None:
        """Drop buckets older than each level keeps; facts that old are no longer added."""
        wm_m, wm_h, wm_d = self.clock.watermarks(now)
        self.wm_minute = max(self.wm_minute, wm_m)
        self.wm_hour = max(self.wm_hour, wm_h)
        self.wm_day = max(self.wm_day, wm_d)
        first_m = self.clock.minute(self.wm_minute)
        first_h = self.clock.hour(self.wm_hour)
        first_d = self.clock.day(self.wm_day)
        for per_family in self.windowed.values():
            for labels in list(per_family):
                series = per_family[labels]
                for level, first in ((series.m, first_m), (series.h, first_h), (series.d, first_d)):
                    for key in [k for k in level if k < first]:
                        del level[key]
                # A cached window over dropped buckets no longer equals their merge.
                if series.cm is not None and series.cm.first_key < first_m:
                    series.cm = None
                if series.ch is not None and series.ch.first_key < first_h:
                    series.ch = None
                if series.empty():
                    del per_family[labels]

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
        for old, new in zip(before, all_bounds, strict=True):
            if old.level != new.level:
                return None
            if (old.first_key, old.last_key) == (new.first_key, new.last_key):
                continue
            keys = set(range(old.first_key, old.last_key + 1)) ^ set(
                range(new.first_key, new.last_key + 1)
            )
            if len(keys) > MAX_MOVED_KEYS:
                return None  # a long pause: not worth sorting out
            moved.append((new.level, sorted(keys)))
        if moved:
            for family, per_labels in self.windowed.items():
                for labels, series in per_labels.items():
                    for level, keys in moved:
                        buckets = series.d
                        if level != "d":
                            buckets = series.m if level == "m" else series.h
                        if any(key in buckets for key in keys):
                            touched.add((family, labels))
                            break
        return touched

    def window_accs(
        self, family: str, bounds: WindowBounds
    ) -> Iterator[tuple[tuple[str, ...], Acc]]:
        for labels, series in self.windowed.get(family, {}).items():
            acc = series.window(bounds)
            if acc is not None and (acc.count or acc.total):
                yield labels, acc

    def live_accs(self, family: str) -> Iterator[tuple[tuple[str, ...], Acc]]:
        yield from self.live.get(family, {}).items()
