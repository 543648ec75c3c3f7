"""The catalogue's values, computed from aggregates at read time (scrape, API, publish round).

Counts and sums are *split*: every worker exports its own partitions' share, and
``sum by`` adds them up (``split_samples``). Ratios, means, quantiles and the other whole
kinds are computed by the owner of the series' key (rep, stage, source or global) from the
partial summaries every worker publishes for it (``summaries``; ``streamproc.partials``
carries them) and the owner merges (``merging``, ``merged_whole_samples``).
"""

from __future__ import annotations

import math
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import NamedTuple

from streamproc.contract.targets import TARGET_PERIODS, TargetKey
from streamproc.engine.aggregates import Acc, PartitionAggregates, read_bounds
from streamproc.engine.facts import FAMILIES
from streamproc.engine.windows import PERIODS, WindowBounds, WindowClock
from streamproc.kpis.catalogue import (
    CATALOGUE,
    FORECAST_FAMILIES,
    GLOBAL,
    MEASURE_FAMILIES,
    QUANTILES,
    ROUTES,
    SUMMARY_FAMILIES,
    TARGET_KINDS,
    Kind,
    Kpi,
    owner_keys,
)
from streamproc.runtime.slices import at_once

__all__ = [
    "LIVE",
    "ReadContext",
    "Sample",
    "Summary",
    "daily_attempt_targets",
    "merge_summaries",
    "merged_whole_samples",
    "merging",
    "owner_keys_of",
    "quantile",
    "rounded",
    "split_samples",
    "summaries",
    "summaries_in_steps",
    "targets_in_force",
    "whole_samples",
]

LIVE = "live"  # the "window" of live accumulators in a summary

Labels = tuple[str, ...]
# owner key -> family -> labels -> window (or LIVE) -> Acc
Summary = dict[str, dict[Labels, dict[str, Acc]]]
# (family, window; None: live) -> the family's accumulators by labels
AccsFor = Callable[[str, "WindowBounds | None"], dict[Labels, Acc]]


class Sample(NamedTuple):
    metric: str
    labels: dict[str, str]
    window: WindowBounds | None
    value: float


@dataclass(frozen=True, slots=True)
class ReadContext:
    """What a read needs besides the accumulators."""

    now: float
    cap: int  # distinct values per label before the rest fold into "other"
    targets: Mapping[str, float] = field(default_factory=dict)  # rep -> daily attempts
    target_reps: Collection[str] = ()  # reps whose target ratio this worker exports
    # (measure, period, rep; "": the team) -> the target in force
    period_targets: Mapping[TargetKey, float] = field(default_factory=dict)
    owns: Callable[[str], bool] = field(default=lambda key: True)  # owner key -> exported here


def targets_in_force(
    activity_targets: Mapping[str, float], on_topic: Mapping[TargetKey, float]
) -> dict[TargetKey, float]:
    """The targets a worker applies: ``STREAMPROC_ACTIVITY_TARGETS`` as the default daily
    ``contact_attempts`` target of each rep, those on the topic over them."""
    out = {("contact_attempts", "day", rep): value for rep, value in activity_targets.items()}
    out.update(on_topic)
    return out


def daily_attempt_targets(targets: Mapping[TargetKey, float]) -> dict[str, float]:
    """rep -> daily ``contact_attempts`` target (``sales_activity_target_ratio``)."""
    return {
        rep: value
        for (measure, period, rep), value in targets.items()
        if measure == "contact_attempts" and period == "day" and rep
    }


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); values sorted."""
    if len(values) == 1:
        return values[0]
    pos = (len(values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def rounded(value: float) -> float:
    # Retraction leaves float dust (0.1 + 0.2 - 0.1); money and seconds need no more than 6.
    return round(value, 6) + 0.0


def _busiest(weigh: Sequence[dict[Labels, Acc]], cap: int) -> list[set[str] | None]:
    """Per label position, the values that keep their name under the cap: the busiest
    ``cap - 1`` over all of ``weigh`` (None: at most ``cap`` values, all kept)."""
    width = next((len(labels) for each in weigh for labels in each), 0)
    keeps: list[set[str] | None] = []
    for pos in range(width):
        weight: dict[str, int] = {}
        for each in weigh:
            for labels, acc in each.items():
                weight[labels[pos]] = weight.get(labels[pos], 0) + abs(acc.count)
        if len(weight) <= cap:
            keeps.append(None)
            continue
        ranked = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))
        keeps.append({value for value, _ in ranked[: cap - 1]})
    return keeps


def _other_at(labels: Labels, pos: int) -> Labels:
    return (*labels[:pos], "other", *labels[pos + 1 :])


def _fold(
    accs: dict[Labels, Acc], cap: int, keeps: list[set[str] | None] | None = None
) -> dict[Labels, Acc]:
    """Cap each label's distinct values: keep the busiest ``cap - 1``, fold the rest.
    ``keeps`` (``_busiest``; default: of ``accs`` alone) says which are the busiest, so
    that the inputs of one KPI fold alike: a ratio's numerator folded on its own weights
    kept apart values that its denominator folded into ``other``, and ``other`` read 0 / n.
    """
    if not accs:
        return accs
    for pos, keep in enumerate(_busiest([accs], cap) if keeps is None else keeps):
        if keep is None:
            continue
        folded: dict[Labels, Acc] = {}
        renamed = (
            (labels if labels[pos] in keep else _other_at(labels, pos), acc)
            for labels, acc in accs.items()
        )
        _merge_into(folded, renamed)
        accs = folded
    return accs


# The product pair families: both labels name products. The cap keeps the busiest pairs
# (business-events.md: "the busiest pairs within the label cap"), not each label's busiest
# values: those cut a pair busy in few others' company (m with n only) and made series such
# as (a, other), several pairs of one deal added up, whose attach ratio went above 1.
_PAIR_FAMILIES = frozenset({"product_pair", "product_attach"})
_FOLDED_PAIR = ("other", "other")


def _fold_pairs(accs: dict[Labels, Acc], cap: int) -> dict[Labels, Acc]:
    """Keep the busiest pairs while their products number at most ``cap - 1``; fold the
    rest into (other, other). Nothing folds while the products number at most ``cap``."""
    if len({product for labels in accs for product in labels}) <= cap:
        return accs
    kept: set[str] = set()
    relabelled: list[tuple[Labels, Acc]] = []
    for labels, acc in sorted(accs.items(), key=lambda item: (-abs(item[1].count), item[0])):
        if len(kept.union(labels)) <= cap - 1:
            kept.update(labels)
        else:
            labels = _FOLDED_PAIR
        relabelled.append((labels, acc))
    folded: dict[Labels, Acc] = {}
    _merge_into(folded, relabelled)
    return folded


def _merge_into(
    into: dict[Labels, Acc], pairs: Iterable[tuple[Labels, Acc]], values: bool = True
) -> None:
    """Merge ``pairs`` into ``into`` by labels; ``values=False``: counts and totals only."""
    for labels, acc in pairs:
        target = into.get(labels)
        if target is None:
            target = into[labels] = Acc(values and acc.values is not None)
        if values:
            target.merge(acc)
        else:
            target.count += acc.count
            target.total += acc.total


def _project(family: str, kpi: Kpi, accs: dict[Labels, Acc]) -> dict[Labels, Acc]:
    """The family's accumulators by the KPI's labels (facts of a finer series added up)."""
    names = FAMILIES[family].labels
    if names == kpi.labels:
        return accs
    positions = [names.index(label) for label in kpi.labels]
    out: dict[Labels, Acc] = {}
    _merge_into(
        out,
        ((tuple(labels[p] for p in positions), acc) for labels, acc in accs.items()),
        values=kpi.needs_values,
    )
    return out


def _passed(acc: Acc | None, now: float) -> int:
    return 0 if acc is None else acc.at_most(now)


class _Reader:
    """Computes KPI samples from accumulators, however they were gathered (``accs``)."""

    def __init__(self, accs: AccsFor, ctx: ReadContext, windows: Sequence[WindowBounds]) -> None:
        self._accs = _memo(accs)
        self.ctx = ctx
        self._windows = windows
        # the daily target's window
        self._today = next((w for w in windows if w.name == "today"), None)

    def inputs(self, kpi: Kpi, window: WindowBounds | None) -> list[dict[Labels, Acc]]:
        """Each family the KPI reads, by the KPI's labels, label values capped alike: by
        the denominators' weights for a ratio (its values those of its denominator's count,
        e.g. the reps of ``sales_contact_attempts``), else by all the inputs'; the product
        pairs as pairs (``_fold_pairs``)."""
        projected = [
            _project(family, kpi, self._accs(family, window)) for family in kpi.reads_by_labels
        ]
        if kpi.reads_by_labels and kpi.reads_by_labels[0] in _PAIR_FAMILIES:
            return [_fold_pairs(accs, self.ctx.cap) for accs in projected]
        weigh = projected[1:] if kpi.kind is Kind.RATIO and len(projected) > 1 else projected
        keeps = _busiest(weigh, self.ctx.cap)  # once for all the inputs
        return [_fold(accs, self.ctx.cap, keeps) for accs in projected]

    def samples(self, kpi: Kpi) -> Iterator[Sample]:
        for window in self._windows if kpi.windowed else (None,):
            for labels, value in self._values(kpi, window):
                # a team-wide series (``Kpi.total``) carries none of the KPI's labels
                names = kpi.series_labels if labels else ()
                named = dict(zip(names, labels, strict=True))
                if kpi.kind in TARGET_KINDS and not named.get("rep"):
                    named.pop("rep", None)  # a team target: no rep label
                yield Sample(kpi.name, named, window, value)

    def _values(self, kpi: Kpi, window: WindowBounds | None) -> Iterator[tuple[Labels, float]]:
        kind, now = kpi.kind, self.ctx.now
        special = _SPECIAL.get(kind)
        if special is not None:
            yield from special(self, kpi, window)
            return
        first, *rest = self.inputs(kpi, window)
        if kind is Kind.COUNT or kind is Kind.SUM:
            for labels, acc in first.items():
                if acc.count > 0:
                    yield labels, rounded(acc.total) if kind is Kind.SUM else float(acc.count)
        elif kind is Kind.RATIO:
            den: dict[Labels, int] = {}
            for accs in rest:
                for labels, acc in accs.items():
                    den[labels] = den.get(labels, 0) + acc.count
            for labels, n in den.items():
                if n > 0:
                    hit = first.get(labels)
                    yield labels, rounded((hit.count if hit else 0) / n)
        elif kind is Kind.MEAN:
            for labels, acc in first.items():
                if acc.count > 0:
                    yield labels, rounded(acc.total / acc.count)
        elif kind is Kind.QUANTILES:
            for labels, acc in first.items():
                if acc.count > 0:
                    for q, value in zip(QUANTILES, acc.quantiles(QUANTILES), strict=True):
                        yield (*labels, str(q)), rounded(value)
        elif kind is Kind.DEADLINES_PASSED:
            for labels in set(first).union(*rest):
                minus = sum(_passed(accs.get(labels), now) for accs in rest)
                yield labels, float(_passed(first.get(labels), now) - minus)
        elif kind is Kind.SUM_DIFF:
            costs = rest[0]
            for labels in first.keys() | costs.keys():
                plus, less = first.get(labels), costs.get(labels)
                value = (plus.total if plus else 0.0) - (less.total if less else 0.0)
                if (plus and plus.count) or (less and less.count):
                    yield labels, rounded(value)

    def _per_distinct(
        self, kpi: Kpi, window: WindowBounds | None
    ) -> Iterator[tuple[Labels, float]]:
        total = sum(acc.total for acc in self._accs(kpi.reads[0], window).values())
        distinct = sum(1 for acc in self._accs(kpi.reads[1], window).values() if acc.count > 0)
        if distinct > 0:
            yield (), rounded(total / distinct)

    def _sum_per_count(
        self, kpi: Kpi, window: WindowBounds | None
    ) -> Iterator[tuple[Labels, float]]:
        sums, counts = self.inputs(kpi, window)
        if not sums:
            return  # no cost recorded in the window: absent, not 0 (costs may not be sent)
        for labels, acc in counts.items():
            spent = sums.get(labels)
            if acc.count > 0:  # a source nothing was spent on: 0 (referrals, organic)
                yield labels, rounded(spent.total / acc.count if spent is not None else 0.0)
        if kpi.total:
            n = sum(acc.count for acc in counts.values())
            if n > 0:
                yield (), rounded(sum(acc.total for acc in sums.values()) / n)

    def _oldest_age(self, kpi: Kpi, _: WindowBounds | None) -> Iterator[tuple[Labels, float]]:
        """Now minus the oldest value of ``reads[0]`` (live), and 0 for the label values of
        ``reads[1]`` in any window with none: outputs.md's "0 when none", for the reps that
        had leads waiting in the periods kept (a rep with none drops out of ``reads[0]``).
        Under the label cap those zeros weigh nothing: they fold into ``other`` first."""
        waiting = _project(kpi.reads[0], kpi, self._accs(kpi.reads[0], None))
        known = {
            labels
            for window in self._windows
            for labels in _project(kpi.reads[1], kpi, self._accs(kpi.reads[1], window))
        }
        none_waiting = {labels: Acc(True) for labels in known - waiting.keys()}
        for labels, acc in _fold(waiting | none_waiting, self.ctx.cap).items():
            oldest = acc.smallest()
            yield labels, rounded(max(0.0, self.ctx.now - oldest) if oldest is not None else 0.0)

    def _attach(self, kpi: Kpi, window: WindowBounds | None) -> Iterator[tuple[Labels, float]]:
        (pairs,) = self.inputs(kpi, window)
        # a kept pair's share of its product's own wins, folded or not in sales_product_wins;
        # none for the folded pairs (a share of deals is not a sum of pairs)
        wins = self._accs(kpi.reads[1], window)
        for (a, b), acc in pairs.items():
            base = wins.get((a,)) if (a, b) != _FOLDED_PAIR else None
            if base is not None and base.count > 0 and acc.count > 0:
                yield (a, b), rounded(acc.count / base.count)

    def _at_start_ratio(
        self, kpi: Kpi, window: WindowBounds | None
    ) -> Iterator[tuple[Labels, float]]:
        exits = self.inputs(kpi, window)[0]
        live = _fold(_project(kpi.reads[1], kpi, self._accs(kpi.reads[1], None)), self.ctx.cap)
        # From the window's start to now: a past period (last_month) and the current one.
        since = [window]
        if window is not None and window.name.startswith("last_"):
            current = window.name.removeprefix("last_")
            since += [w for w in self._windows if w.name == current]
        came_since, left_since = _Tally(), _Tally()
        for w in since:
            exits_in_w, _, entries_in_w = self.inputs(kpi, w)
            left_since.add(exits_in_w)
            came_since.add(entries_in_w)
        for labels in exits.keys() | live.keys():
            left = exits.get(labels)
            gone = left.count if left else 0
            now_active = live[labels].count if labels in live else 0
            at_start = now_active - came_since.get(labels) + left_since.get(labels)
            if at_start > 0:
                yield labels, rounded(gone / at_start)

    def _nps(self, kpi: Kpi, window: WindowBounds | None) -> Iterator[tuple[Labels, float]]:
        """Per label value (the KPI's one label) and, with ``total``, for all of them."""
        names = FAMILIES[kpi.reads[0]].labels
        at, category = names.index(kpi.labels[0]), names.index("category")
        by_label: dict[Labels, list[int]] = {}  # labels -> [promoters, detractors, answers]
        team = [0, 0, 0]
        for labels, acc in _fold(self._accs(kpi.reads[0], window), self.ctx.cap).items():
            tally = by_label.setdefault((labels[at],), [0, 0, 0])
            kind = labels[category]
            for counts in (tally, team):
                counts[0] += acc.count if kind == "promoter" else 0
                counts[1] += acc.count if kind == "detractor" else 0
                counts[2] += acc.count
        if kpi.total:
            by_label[()] = team
        for labels, (promoters, detractors, answers) in by_label.items():
            if answers > 0:
                yield labels, rounded(100.0 * (promoters - detractors) / answers)

    def _target_ratio(self, kpi: Kpi) -> Iterator[tuple[Labels, float]]:
        targets = self.ctx.targets
        today = self._today
        if today is None:
            return
        done: dict[Labels, int] = {(rep,): 0 for rep in self.ctx.target_reps}
        for labels, acc in self.inputs(kpi, today)[0].items():
            if labels in done or labels[0] in targets:
                done[labels] = done.get(labels, 0) + acc.count
        for labels, count in done.items():
            target = targets.get(labels[0])
            if target:
                yield labels, rounded(count / target)

    def _targets(self, kpi: Kpi) -> Iterator[tuple[Labels, float]]:
        """Each target this worker exports (its rep's owner; the team's: global), its
        attainment or its revenue's forecast coverage."""
        for (measure, period, rep), target in sorted(self.ctx.period_targets.items()):
            if not self.ctx.owns(f"rep:{rep}" if rep else GLOBAL):
                continue
            if kpi.kind is Kind.TARGET:
                yield (measure, period, rep), target
            elif kpi.kind is Kind.TARGET_ATTAINMENT:
                yield (measure, period, rep), rounded(self._actual(measure, period, rep) / target)
            elif measure == "revenue_won":
                won = self._actual(measure, period, rep)
                yield (period, rep), rounded((won + self._forecast(rep)) / target)

    def _actual(self, measure: str, period: str, rep: str) -> float:
        """The measure of a rep (the team: "") in the target period's current window."""
        window = next((w for w in self._windows if w.name == TARGET_PERIODS[period]), None)
        if window is None:
            return 0.0
        rep_family, team_family, is_sum = MEASURE_FAMILIES[measure]
        family = rep_family if rep else team_family
        at = FAMILIES[family].labels.index("rep") if rep else -1
        return sum(
            (acc.total if is_sum else acc.count)
            for labels, acc in self._accs(family, window).items()
            if at < 0 or labels[at] == rep
        )

    def _forecast(self, rep: str) -> float:
        rep_family, team_family = FORECAST_FAMILIES
        accs = self._accs(rep_family if rep else team_family, None)
        return sum(acc.total for labels, acc in accs.items() if not rep or labels == (rep,))


_ValuesOf = Callable[[_Reader, Kpi, "WindowBounds | None"], Iterator[tuple[Labels, float]]]
# The kinds read by a method of their own (the others: ``_Reader._values``).
_SPECIAL: dict[Kind, _ValuesOf] = {
    Kind.PER_DISTINCT: _Reader._per_distinct,
    Kind.TARGET_RATIO: lambda reader, kpi, _: reader._target_ratio(kpi),
    Kind.SUM_PER_COUNT: _Reader._sum_per_count,
    Kind.OLDEST_AGE: _Reader._oldest_age,
    Kind.ATTACH: _Reader._attach,
    Kind.AT_START_RATIO: _Reader._at_start_ratio,
    Kind.NPS: _Reader._nps,
    Kind.TARGET: lambda reader, kpi, _: reader._targets(kpi),
    Kind.TARGET_ATTAINMENT: lambda reader, kpi, _: reader._targets(kpi),
    Kind.FORECAST_COVERAGE: lambda reader, kpi, _: reader._targets(kpi),
}


class _Tally:
    """Counts by labels, added up over several windows."""

    def __init__(self) -> None:
        self.by: dict[Labels, int] = {}

    def add(self, accs: dict[Labels, Acc]) -> None:
        for labels, acc in accs.items():
            self.by[labels] = self.by.get(labels, 0) + acc.count

    def get(self, labels: Labels) -> int:
        return self.by.get(labels, 0)


def _read_all(
    kpis: Iterable[Kpi], accs: AccsFor, windows: Sequence[WindowBounds], ctx: ReadContext
) -> Iterator[Sample]:
    reader = _Reader(accs, ctx, windows)
    for entry in kpis:
        yield from reader.samples(entry)


def _memo(accs: AccsFor) -> AccsFor:
    """A family's accumulators gathered once per read, however many KPIs read them."""
    seen: dict[tuple[str, str | None], dict[Labels, Acc]] = {}

    def cached(family: str, window: WindowBounds | None) -> dict[Labels, Acc]:
        key = (family, None if window is None else window.name)
        got = seen.get(key)
        if got is None:
            got = seen[key] = accs(family, window)
        return got

    return cached


_SPLIT_KPIS = tuple(k for k in CATALOGUE if k.split)
_WHOLE_KPIS = tuple(k for k in CATALOGUE if not k.split)
_TARGET_KPIS = tuple(k for k in CATALOGUE if k.kind in TARGET_KINDS)


# --- split metrics: this worker's partitions ---------------------------------------------


def _only(kpis: Iterable[Kpi], names: Collection[str] | None) -> list[Kpi]:
    """The KPIs named (all when ``names`` is None)."""
    return [k for k in kpis if names is None or k.name in names]


def split_samples(
    parts: Iterable[PartitionAggregates],
    clock: WindowClock,
    now: float,
    cap: int,
    names: Collection[str] | None = None,
) -> Iterator[Sample]:
    """Counts and sums of this worker's own partitions (``sum by`` adds the workers up);
    only the KPIs in ``names`` when given."""
    parts = list(parts)

    def accs(family: str, bounds: WindowBounds | None) -> dict[Labels, Acc]:
        merged: dict[Labels, Acc] = {}
        for part in parts:
            if bounds is None:  # live: the SLA deadlines are counted from the values
                _merge_into(merged, part.live_accs(family))
            else:  # windowed: the split metrics are counts and sums, no value is read
                _merge_into(merged, part.window_accs(family, bounds, False), values=False)
        return merged

    kpis = _only(_SPLIT_KPIS, names)
    yield from _read_all(kpis, accs, clock.all_bounds(now), ReadContext(now, cap))


# --- partial summaries and whole metrics -------------------------------------------------


def summaries(
    part: PartitionAggregates,
    clock: WindowClock,
    now: float,
    keys: Collection[str] | None = None,
) -> dict[str, Summary]:
    """What this partition contributes to each owner key (only ``keys`` when given).

    The live-gauge accumulators in it are the partition's own: encode or copy them before
    the next batch is applied.
    """
    return at_once(summaries_in_steps(part, clock, now, keys))


def summaries_in_steps(
    part: PartitionAggregates,
    clock: WindowClock,
    now: float,
    keys: Collection[str] | None = None,
) -> Generator[None, None, dict[str, Summary]]:
    """``summaries``, yielding None after each series: there the caller may let the event
    loop run (a partition's summaries in one go held it 30 - 60 ms at 20,000 leads). The
    summaries are the generator's return value (``yield from``)."""
    out: dict[str, Summary] = {}
    all_bounds = clock.all_bounds(now)
    for family in SUMMARY_FAMILIES:
        if FAMILIES[family].live:
            for labels, acc in part.live_accs(family):
                for key in owner_keys(family, labels):
                    if keys is None or key in keys:
                        per_labels = out.setdefault(key, {}).setdefault(family, {})
                        per_labels.setdefault(labels, {})[LIVE] = acc
            continue
        per_family = part.windowed.get(family)
        if not per_family:
            continue
        family_bounds = read_bounds(family, all_bounds)
        # A copy: batches applied between the steps add series (published next round).
        for labels, series in list(per_family.items()):
            wanted = [k for k in owner_keys(family, labels) if keys is None or k in keys]
            if not wanted:
                continue
            for bounds in family_bounds:
                in_window = series.window(bounds)
                if in_window is None or not (in_window.count or in_window.total):
                    continue
                for key in wanted:
                    per_labels = out.setdefault(key, {}).setdefault(family, {})
                    per_labels.setdefault(labels, {})[bounds.name] = in_window
            yield None
    return out


def owner_keys_of(touched: Iterable[tuple[str, Labels]]) -> set[str]:
    """The owner keys whose summaries (family, labels) pairs feed."""
    out: set[str] = set()
    for family, labels in touched:
        if family in ROUTES:
            out.update(owner_keys(family, labels))
    return out


def merge_summaries(items: Iterable[Summary]) -> Summary:
    return at_once(merging(items))


def merging(items: Iterable[Summary]) -> Generator[None, None, Summary]:
    """The summaries merged (the generator's return value), each accumulator once from all
    of its parts, its values frozen (``Acc.merged``: read it, do not change it); yields
    None after each series, where the caller may let the event loop run."""
    parts: dict[str, dict[Labels, dict[str, list[Acc]]]] = {}
    for summary in items:
        for family, per_labels in summary.items():
            gathered = parts.setdefault(family, {})
            for labels, per_window in per_labels.items():
                target = gathered.setdefault(labels, {})
                for window, acc in per_window.items():
                    target.setdefault(window, []).append(acc)
    merged: Summary = {}
    for family, lists in parts.items():
        into = merged[family] = {}
        for labels, accs_by_window in lists.items():
            into[labels] = {
                w: Acc.merged(accs, counted=w in PERIODS) for w, accs in accs_by_window.items()
            }
            yield None
    return merged


def whole_samples(
    owned: Mapping[str, Sequence[Summary]],
    clock: WindowClock,
    ctx: ReadContext,
    with_counts: bool = False,
) -> Iterator[Sample]:
    """Whole metrics of the owner keys this worker owns (``owned``: key -> partial
    summaries); see ``merged_whole_samples``."""
    merged = {key: merge_summaries(parts) for key, parts in owned.items()}
    return merged_whole_samples(merged, clock, ctx, with_counts)


def merged_whole_samples(
    merged: Mapping[str, Summary],
    clock: WindowClock,
    ctx: ReadContext,
    with_counts: bool = False,
    names: Collection[str] | None = None,
) -> Iterator[Sample]:
    """Whole metrics from summaries already merged per owner key (read, not changed).

    ``with_counts``: the counts and sums too, whole (for subscribers, who see one value per
    series, not one per worker). ``names``: only these KPIs.
    """
    # Within a kind, keys own disjoint series (a rep key holds that rep's labels only), so
    # the kind's summary is their union: no accumulator is merged again.
    by_kind: dict[str, Summary] = {}
    for key, summary in merged.items():
        into = by_kind.setdefault(key.split(":", 1)[0], {})
        for family, per_labels in summary.items():
            target = into.get(family)
            if target is None:
                into[family] = dict(per_labels)
            else:
                target.update(per_labels)
    windows = clock.all_bounds(ctx.now)
    every = CATALOGUE if with_counts else _WHOLE_KPIS
    kpis = [k for k in _only(every, names) if k.kind not in TARGET_KINDS]
    for owner in sorted({k.owner for k in kpis}):
        accs = _accs_of(by_kind.get(owner, {}))
        yield from _read_all((k for k in kpis if k.owner == owner), accs, windows, ctx)
    # targets read a rep's actuals (rep keys) and the team's (the global key)
    both: Summary = {}
    for kind in ("rep", GLOBAL):
        for family, per_labels in by_kind.get(kind, {}).items():
            both.setdefault(family, {}).update(per_labels)
    yield from _read_all(_only(_TARGET_KPIS, names), _accs_of(both), windows, ctx)


def _accs_of(summary: Summary) -> AccsFor:
    def accs(family: str, bounds: WindowBounds | None) -> dict[Labels, Acc]:
        name = LIVE if bounds is None else bounds.name
        return {
            labels: per_window[name]
            for labels, per_window in summary.get(family, {}).items()
            if name in per_window
        }

    return accs
