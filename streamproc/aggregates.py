"""In-memory aggregates of one partition's facts, in event-time buckets, with retraction.

Everything here is derived from the lead states of the partition: it is rebuilt from them
after a rebalance and never written to Kafka itself, so it cannot double count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from streamproc.facts import Fact
from streamproc.windows import HOUR, MINUTE, WindowBounds, WindowClock

__all__ = ["DIST_FAMILIES", "Acc", "PartitionAggregates", "fact_diff"]

# Families whose individual values are kept (quantiles, minimum, counts below a deadline).
DIST_FAMILIES = frozenset(
    {"first_contact", "stage_exit", "awaiting_since", "awaiting_risk", "awaiting_due"}
)


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
        values = [[v, n] for v, n in self.values.items()] if self.values is not None else None
        return [self.count, self.total, values]

    @classmethod
    def from_wire(cls, row: list) -> Acc:  # type: ignore[type-arg]
        acc = cls(dist=row[2] is not None)
        acc.count, acc.total = row[0], row[1]
        if row[2] is not None:
            acc.values = {float(v): int(n) for v, n in row[2]}
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


class _Series:
    """The buckets of one (family, labels) at the three levels."""

    __slots__ = ("d", "dist", "h", "m")

    def __init__(self, dist: bool) -> None:
        self.dist = dist
        self.m: dict[int, Acc] = {}
        self.h: dict[int, Acc] = {}
        self.d: dict[int, Acc] = {}

    def window(self, bounds: WindowBounds) -> Acc | None:
        level = self.m if bounds.level == "m" else self.h if bounds.level == "h" else self.d
        lo, hi = bounds.first_key, bounds.last_key
        out: Acc | None = None
        for key, acc in level.items():
            if lo <= key <= hi:
                if out is None:
                    out = Acc(self.dist)
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

    def apply(self, facts: Iterable[Fact], sign: int) -> None:
        # The hot path of the engine: locals and inlined bucket keys on purpose.
        day = self.clock.day
        windowed = self.windowed
        wm_minute, wm_hour, wm_day = self.wm_minute, self.wm_hour, self.wm_day
        for family, labels, t, value in facts:
            if t is None:
                self._live(family, labels, value, sign)
                continue
            if t < wm_hour and t < wm_day:
                continue  # past retention: in the lead state, not in any window
            per_family = windowed.get(family)
            if per_family is None:
                per_family = windowed[family] = {}
            series = per_family.get(labels)
            if series is None:
                series = per_family[labels] = _Series(family in DIST_FAMILIES)
            if t >= wm_minute:
                _bump(series.m, int(t // MINUTE), value, sign, series.dist)
            if t >= wm_hour:
                _bump(series.h, int(t // HOUR), value, sign, series.dist)
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
                if series.empty():
                    del per_family[labels]

    def window_accs(
        self, family: str, bounds: WindowBounds
    ) -> Iterator[tuple[tuple[str, ...], Acc]]:
        for labels, series in self.windowed.get(family, {}).items():
            acc = series.window(bounds)
            if acc is not None and (acc.count or acc.total):
                yield labels, acc

    def live_accs(self, family: str) -> Iterator[tuple[tuple[str, ...], Acc]]:
        yield from self.live.get(family, {}).items()
