"""The KPI catalogue of the contract, computed from aggregates at read time (scrape, API).

Counts and sums are *split*: every worker exports its own partitions' share, and
``sum by`` adds them up. Ratios, means, quantiles and maxima are *whole*: computed by the
owner of the series' aggregation key (rep, source, stage or global) from the partial
summaries every worker publishes for it (see ``partials.py``).
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
from dataclasses import dataclass
from typing import NamedTuple

from streamproc.aggregates import Acc, PartitionAggregates
from streamproc.config import Settings
from streamproc.slices import at_once
from streamproc.windows import WINDOWS, WindowBounds, WindowClock

__all__ = [
    "CATALOGUE",
    "QUANTILES",
    "MetricSpec",
    "Sample",
    "Summary",
    "count_samples",
    "merge_summaries",
    "merged_whole_samples",
    "merging",
    "owner_key_of",
    "owner_keys",
    "owner_keys_of",
    "quantile",
    "split_samples",
    "summaries",
    "whole_samples",
]

QUANTILES = (0.5, 0.9)
LIVE = "live"

# owner key -> family -> labels -> window (or "live") -> Acc
Summary = dict[str, dict[tuple[str, ...], dict[str, Acc]]]


class Sample(NamedTuple):
    metric: str
    labels: dict[str, str]
    window: WindowBounds | None
    value: float


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    help: str
    labels: tuple[str, ...]
    windowed: bool
    whole: bool
    family: str  # the topic family for the metric topics (response-time, activity, ...)


def _m(name: str, labels: str, windowed: bool, whole: bool, family: str, help_: str) -> MetricSpec:
    return MetricSpec(name, help_, tuple(labels.split()) if labels else (), windowed, whole, family)


CATALOGUE: tuple[MetricSpec, ...] = (
    _m("sales_leads_created", "rep source", True, False, "response-time", "Leads created"),
    _m(
        "sales_first_contacts",
        "rep",
        True,
        False,
        "response-time",
        "Leads whose first contact attempt fell in the window",
    ),
    _m(
        "sales_response_time_seconds",
        "rep quantile",
        True,
        True,
        "response-time",
        "Lead created to first contact attempt, quantiles",
    ),
    _m(
        "sales_response_time_avg_seconds",
        "rep",
        True,
        True,
        "response-time",
        "Lead created to first contact attempt, mean",
    ),
    _m(
        "sales_responded_within_sla_ratio",
        "rep",
        True,
        True,
        "response-time",
        "Share of first contacts made within the SLA",
    ),
    _m(
        "sales_leads_awaiting_contact",
        "rep source",
        False,
        False,
        "response-time",
        "Leads with no contact attempt yet",
    ),
    _m(
        "sales_leads_awaiting_contact_at_risk",
        "rep",
        False,
        False,
        "response-time",
        "Waiting leads past the at-risk share of their SLA, not past it",
    ),
    _m(
        "sales_leads_awaiting_contact_over_sla",
        "rep",
        False,
        False,
        "response-time",
        "Waiting leads past their SLA",
    ),
    _m(
        "sales_oldest_awaiting_contact_seconds",
        "rep",
        False,
        True,
        "response-time",
        "Age of the oldest lead still waiting for contact",
    ),
    _m("sales_contact_attempts", "rep channel", True, False, "activity", "Contact attempts"),
    _m(
        "sales_contact_connects",
        "rep channel",
        True,
        False,
        "activity",
        "Contact attempts that connected",
    ),
    _m("sales_connect_ratio", "rep channel", True, True, "activity", "Connects / attempts"),
    _m(
        "sales_activity_target_ratio",
        "rep",
        False,
        True,
        "activity",
        "Attempts today / the rep's daily target",
    ),
    _m("sales_stage_entries", "stage", True, False, "pipeline", "Deals that entered the stage"),
    _m(
        "sales_stage_conversion_ratio",
        "stage",
        True,
        True,
        "pipeline",
        "Of the deals that left the stage, the share that moved forward",
    ),
    _m(
        "sales_stage_dwell_seconds",
        "stage quantile",
        True,
        True,
        "pipeline",
        "Time spent in the stage by the deals that left it",
    ),
    _m("sales_deals_won", "rep source", True, False, "pipeline", "Deals closed won"),
    _m("sales_revenue_won", "rep", True, False, "pipeline", "Sum of deal_value of won deals"),
    _m("sales_deals_lost", "rep reason", True, False, "pipeline", "Deals closed lost"),
    _m("sales_win_ratio", "source", True, True, "pipeline", "Won / (won + lost)"),
    _m(
        "sales_revenue_per_rep",
        "",
        True,
        True,
        "pipeline",
        "Revenue won / reps with any event in the window",
    ),
    _m(
        "sales_upsell_ratio",
        "",
        True,
        True,
        "pipeline",
        "Share of deals won from existing customers",
    ),
    _m(
        "sales_open_pipeline_value",
        "rep stage",
        False,
        False,
        "pipeline",
        "Sum of deal_value over open deals",
    ),
    _m(
        "sales_forecast_value",
        "rep",
        False,
        False,
        "pipeline",
        "Sum of deal_value x win probability over open deals",
    ),
    _m("sales_emails_sent", "rep", True, False, "email", "Emails sent"),
    _m(
        "sales_emails_opened",
        "rep",
        True,
        False,
        "email",
        "Of the emails sent in the window, those opened so far",
    ),
    _m(
        "sales_emails_clicked",
        "rep",
        True,
        False,
        "email",
        "Of the emails sent in the window, those clicked so far",
    ),
    _m("sales_email_open_ratio", "rep", True, True, "email", "Opened / sent"),
    _m("sales_email_click_ratio", "rep", True, True, "email", "Clicked / sent"),
)
SPECS = {spec.name: spec for spec in CATALOGUE}

# Split metrics straight from one fact family: (metric, family, use the total not the count)
_SPLIT_WINDOWED = (
    ("sales_leads_created", "created", False),
    ("sales_first_contacts", "first_contact", False),
    ("sales_contact_attempts", "attempt", False),
    ("sales_contact_connects", "connect", False),
    ("sales_stage_entries", "stage_entry", False),
    ("sales_deals_won", "won", False),
    ("sales_revenue_won", "won_value", True),
    ("sales_deals_lost", "lost", False),
    ("sales_emails_sent", "email_sent", False),
    ("sales_emails_opened", "email_opened", False),
    ("sales_emails_clicked", "email_clicked", False),
)
_SPLIT_LIVE = (
    ("sales_leads_awaiting_contact", "awaiting", False),
    ("sales_open_pipeline_value", "pipeline_value", True),
    ("sales_forecast_value", "forecast_value", True),
)

# Which owner keys a family's series feeds: label position that names the owner.
_OWNED_BY = {
    "created": "rep",
    "first_contact": "rep",
    "first_contact_in_sla": "rep",
    "attempt": "rep",
    "connect": "rep",
    "won": "rep",
    "won_value": "rep",
    "lost": "rep",
    "email_sent": "rep",
    "email_opened": "rep",
    "email_clicked": "rep",
    "awaiting": "rep",
    "awaiting_since": "rep",
    "awaiting_risk": "rep",
    "awaiting_due": "rep",
    "pipeline_value": "rep",
    "forecast_value": "rep",
    "stage_entry": "stage",
    "stage_exit": "stage",
    "stage_forward": "stage",
    "won_src": "source",
    "lost_src": "source",
}
_GLOBAL = frozenset({"won_src", "won_existing", "won_value", "active"})
_LIVE_OWNED = frozenset(
    {
        "awaiting",
        "awaiting_since",
        "awaiting_risk",
        "awaiting_due",
        "pipeline_value",
        "forecast_value",
    }
)
SUMMARY_FAMILIES = tuple(sorted(set(_OWNED_BY) | _GLOBAL))
_SUMMARY_SET = frozenset(SUMMARY_FAMILIES)


def owner_key_of(labels: dict[str, str]) -> str:
    """The aggregation key that owns a series: its rep, else its stage, else its source."""
    for kind in ("rep", "stage", "source"):
        if kind in labels:
            return f"{kind}:{labels[kind]}"
    return "global"


def owner_keys(family: str, labels: tuple[str, ...]) -> list[str]:
    keys = []
    kind = _OWNED_BY.get(family)
    if kind is not None:
        keys.append(f"{kind}:{labels[0]}")
    if family in _GLOBAL:
        keys.append("global")
    return keys


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); values sorted."""
    if len(values) == 1:
        return values[0]
    pos = (len(values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _fold(accs: dict[tuple[str, ...], Acc], cap: int) -> dict[tuple[str, ...], Acc]:
    """Cap each label's distinct values: keep the busiest ``cap - 1``, fold the rest."""
    if not accs:
        return accs
    width = len(next(iter(accs)))
    for pos in range(width):
        weight: dict[str, int] = {}
        for labels, acc in accs.items():
            weight[labels[pos]] = weight.get(labels[pos], 0) + abs(acc.count)
        if len(weight) <= cap:
            continue
        keep = {v for v, _ in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[: cap - 1]}
        folded: dict[tuple[str, ...], Acc] = {}
        for labels, acc in accs.items():
            if labels[pos] not in keep:
                labels = (*labels[:pos], "other", *labels[pos + 1 :])
            target = folded.get(labels)
            if target is None:
                target = folded[labels] = Acc(acc.values is not None)
            target.merge(acc)
        accs = folded
    return accs


def _merge_into(
    into: dict[tuple[str, ...], Acc],
    pairs: Iterable[tuple[tuple[str, ...], Acc]],
    values: bool = True,
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


def _rounded(value: float) -> float:
    # Retraction leaves float dust (0.1 + 0.2 - 0.1); money and seconds need no more than 6.
    return round(value, 6) + 0.0


# --- split metrics: this worker's partitions ---------------------------------------------


AccsFor = Callable[[str, "WindowBounds | None"], dict[tuple[str, ...], Acc]]


def split_samples(
    parts: Iterable[PartitionAggregates], clock: WindowClock, now: float, cap: int
) -> Iterator[Sample]:
    """Counts and sums of this worker's own partitions (``sum by`` adds the workers up)."""
    parts = list(parts)

    def accs(family: str, bounds: WindowBounds | None) -> dict[tuple[str, ...], Acc]:
        merged: dict[tuple[str, ...], Acc] = {}
        for part in parts:
            if bounds is None:  # live: the SLA deadlines are counted from the values
                _merge_into(merged, part.live_accs(family))
            else:  # windowed: the split metrics are counts and sums, no value is read
                _merge_into(merged, part.window_accs(family, bounds), values=False)
        return merged

    yield from count_samples(accs, clock.all_bounds(now), now, cap)


def count_samples(
    accs: AccsFor, all_bounds: Iterable[WindowBounds], now: float, cap: int
) -> Iterator[Sample]:
    """The count and sum metrics of the catalogue, from accumulators however gathered."""
    for bounds in all_bounds:
        for metric, family, use_total in _SPLIT_WINDOWED:
            yield from _emit(metric, _fold(accs(family, bounds), cap), bounds, use_total)
    for metric, family, use_total in _SPLIT_LIVE:
        yield from _emit(metric, _fold(accs(family, None), cap), None, use_total)
    yield from _sla_counts(accs("awaiting_risk", None), accs("awaiting_due", None), now)


def _emit(
    metric: str, accs: dict[tuple[str, ...], Acc], bounds: WindowBounds | None, use_total: bool
) -> Iterator[Sample]:
    names = SPECS[metric].labels
    for labels, acc in accs.items():
        if acc.count <= 0:
            continue
        value = _rounded(acc.total) if use_total else float(acc.count)
        yield Sample(metric, dict(zip(names, labels, strict=True)), bounds, value)


def _sla_counts(
    risk: dict[tuple[str, ...], Acc], due: dict[tuple[str, ...], Acc], now: float
) -> Iterator[Sample]:
    """At-risk and over-SLA counts: deadlines are facts, "now" decides which have passed."""
    for labels in set(risk) | set(due):
        passed_risk = _passed(risk.get(labels), now)
        passed_due = _passed(due.get(labels), now)
        rep = {"rep": labels[0]}
        yield Sample(
            "sales_leads_awaiting_contact_at_risk", rep, None, float(passed_risk - passed_due)
        )
        yield Sample("sales_leads_awaiting_contact_over_sla", rep, None, float(passed_due))


def _passed(acc: Acc | None, now: float) -> int:
    return 0 if acc is None else acc.at_most(now)


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
        if family in _LIVE_OWNED:
            for labels, acc in part.live_accs(family):
                for key in owner_keys(family, labels):
                    if keys is None or key in keys:
                        per_labels = out.setdefault(key, {}).setdefault(family, {})
                        per_labels.setdefault(labels, {})[LIVE] = acc
            continue
        per_family = part.windowed.get(family)
        if not per_family:
            continue
        # A copy: batches applied between the steps add series (published next round).
        for labels, series in list(per_family.items()):
            wanted = [k for k in owner_keys(family, labels) if keys is None or k in keys]
            if not wanted:
                continue
            for bounds in all_bounds:
                acc = series.window(bounds)
                if acc is None or not (acc.count or acc.total):
                    continue
                for key in wanted:
                    per_labels = out.setdefault(key, {}).setdefault(family, {})
                    per_labels.setdefault(labels, {})[bounds.name] = acc
            yield None
    return out


def owner_keys_of(touched: Iterable[tuple[str, tuple[str, ...]]]) -> set[str]:
    """The owner keys whose summaries (family, labels) pairs feed."""
    out: set[str] = set()
    for family, labels in touched:
        if family in _SUMMARY_SET:
            out.update(owner_keys(family, labels))
    return out


def merge_summaries(items: Iterable[Summary]) -> Summary:
    return at_once(merging(items))


def merging(items: Iterable[Summary]) -> Generator[None, None, Summary]:
    """The summaries merged (the generator's return value), each accumulator once from all
    of its parts, its values frozen (``Acc.merged``: read it, do not change it); yields
    None after each series, where the caller may let the event loop run."""
    parts: dict[str, dict[tuple[str, ...], dict[str, list[Acc]]]] = {}
    for summary in items:
        for family, per_labels in summary.items():
            into = parts.setdefault(family, {})
            for labels, per_window in per_labels.items():
                target = into.setdefault(labels, {})
                for window, acc in per_window.items():
                    target.setdefault(window, []).append(acc)
    merged: Summary = {}
    for family, per_labels in parts.items():
        into = merged[family] = {}
        for labels, per_window in per_labels.items():
            into[labels] = {window: Acc.merged(accs) for window, accs in per_window.items()}
            yield None
    return merged


class _Whole:
    """Computes the whole metrics of one owner key from its merged summary."""

    def __init__(self, summary: Summary, bounds: dict[str, WindowBounds], cap: int) -> None:
        self.summary = summary
        self.bounds = bounds
        self.cap = cap

    def accs(self, family: str, window: str, fold: bool = True) -> dict[tuple[str, ...], Acc]:
        out = {
            labels: per_window[window]
            for labels, per_window in self.summary.get(family, {}).items()
            if window in per_window
        }
        return _fold(out, self.cap) if fold else out

    def ratio(self, metric: str, num: str, den: str) -> Iterator[Sample]:
        names = SPECS[metric].labels
        for window in WINDOWS:
            numerators = self.accs(num, window)
            for labels, acc in self.accs(den, window).items():
                if acc.count > 0:
                    hit = numerators.get(labels)
                    value = (hit.count if hit else 0) / acc.count
                    labelmap = dict(zip(names, labels, strict=True))
                    yield Sample(metric, labelmap, self.bounds[window], _rounded(value))

    def distribution(self, family: str, quantiles: str, mean: str | None) -> Iterator[Sample]:
        label = SPECS[quantiles].labels[0]
        for window in WINDOWS:
            for labels, acc in self.accs(family, window).items():
                if acc.count <= 0:
                    continue
                bounds = self.bounds[window]
                for q, value in zip(QUANTILES, acc.quantiles(QUANTILES), strict=True):
                    labelmap = {label: labels[0], "quantile": str(q)}
                    yield Sample(quantiles, labelmap, bounds, _rounded(value))
                if mean is not None:
                    yield Sample(mean, {label: labels[0]}, bounds, _rounded(acc.total / acc.count))


def whole_samples(
    owned: Mapping[str, Sequence[Summary]],
    settings: Settings,
    clock: WindowClock,
    now: float,
    owned_reps: Iterable[str] = (),
    with_counts: bool = False,
) -> Iterator[Sample]:
    """Whole metrics of the owner keys this worker owns (``owned``: key -> partial summaries).

    ``owned_reps``: reps with a daily target whose key this worker owns (it exports their
    target ratio even before any attempt). ``with_counts``: the counts and sums too, whole
    (for subscribers, who see one value per series, not one per worker).
    """
    merged = {key: merge_summaries(parts) for key, parts in owned.items()}
    return merged_whole_samples(merged, settings, clock, now, owned_reps, with_counts)


def merged_whole_samples(
    merged: Mapping[str, Summary],
    settings: Settings,
    clock: WindowClock,
    now: float,
    owned_reps: Iterable[str] = (),
    with_counts: bool = False,
) -> Iterator[Sample]:
    """``whole_samples`` from summaries already merged per owner key (read, not changed)."""
    bounds = {b.name: b for b in clock.all_bounds(now)}
    # Within a kind, keys own disjoint series (a rep key holds that rep's labels only), so
    # the kind's summary is their union: no accumulator is merged again.
    by_kind: dict[str, Summary] = {"rep": {}, "stage": {}, "source": {}, "global": {}}
    for key, summary in merged.items():
        into = by_kind[key.split(":", 1)[0]]
        for family, per_labels in summary.items():
            target = into.get(family)
            if target is None:
                into[family] = dict(per_labels)
            else:
                target.update(per_labels)
    cap = settings.label_cap
    if with_counts:
        yield from _owned_counts(by_kind, bounds, now, cap)
    rep = _Whole(by_kind["rep"], bounds, cap)
    yield from rep.distribution(
        "first_contact", "sales_response_time_seconds", "sales_response_time_avg_seconds"
    )
    yield from rep.ratio(
        "sales_responded_within_sla_ratio", "first_contact_in_sla", "first_contact"
    )
    yield from rep.ratio("sales_connect_ratio", "connect", "attempt")
    yield from rep.ratio("sales_email_open_ratio", "email_opened", "email_sent")
    yield from rep.ratio("sales_email_click_ratio", "email_clicked", "email_sent")
    yield from _oldest(rep, now)
    yield from _targets(rep, settings, owned_reps)
    stage = _Whole(by_kind["stage"], bounds, cap)
    yield from stage.ratio("sales_stage_conversion_ratio", "stage_forward", "stage_exit")
    yield from stage.distribution("stage_exit", "sales_stage_dwell_seconds", None)
    source = _Whole(by_kind["source"], bounds, cap)
    yield from _win_ratio(source)
    yield from _global(_Whole(by_kind["global"], bounds, cap))


def _owned_counts(
    by_kind: dict[str, Summary], bounds: dict[str, WindowBounds], now: float, cap: int
) -> Iterator[Sample]:
    def accs(family: str, window: WindowBounds | None) -> dict[tuple[str, ...], Acc]:
        summary = by_kind[_OWNED_BY[family]]
        name = LIVE if window is None else window.name
        return {
            labels: per_window[name]
            for labels, per_window in summary.get(family, {}).items()
            if name in per_window
        }

    yield from count_samples(accs, bounds.values(), now, cap)


def _oldest(rep: _Whole, now: float) -> Iterator[Sample]:
    for labels, per_window in rep.summary.get("awaiting_since", {}).items():
        acc = per_window.get(LIVE)
        oldest = acc.smallest() if acc is not None else None
        value = max(0.0, now - oldest) if oldest is not None else 0.0
        yield Sample(
            "sales_oldest_awaiting_contact_seconds", {"rep": labels[0]}, None, _rounded(value)
        )
    # reps that had waiting leads and have none now drop out of the summary: the owner
    # exports no series for them rather than a stale age


def _targets(rep: _Whole, settings: Settings, owned_reps: Iterable[str]) -> Iterator[Sample]:
    attempts: dict[str, int] = {r: 0 for r in owned_reps}
    for labels, acc in rep.accs("attempt", "today").items():
        if labels[0] in attempts or labels[0] in settings.activity_targets:
            attempts[labels[0]] = attempts.get(labels[0], 0) + acc.count
    for name, count in attempts.items():
        target = settings.activity_targets.get(name)
        if target:
            yield Sample(
                "sales_activity_target_ratio", {"rep": name}, None, _rounded(count / target)
            )


def _win_ratio(source: _Whole) -> Iterator[Sample]:
    for window in WINDOWS:
        won = source.accs("won_src", window)
        lost = source.accs("lost_src", window)
        for labels in set(won) | set(lost):
            w = won[labels].count if labels in won else 0
            lo = lost[labels].count if labels in lost else 0
            if w + lo > 0:
                yield Sample(
                    "sales_win_ratio",
                    {"source": labels[0]},
                    source.bounds[window],
                    _rounded(w / (w + lo)),
                )


def _global(glob: _Whole) -> Iterator[Sample]:
    for window in WINDOWS:
        bounds = glob.bounds[window]
        won = sum(acc.count for acc in glob.accs("won_src", window, fold=False).values())
        revenue = sum(acc.total for acc in glob.accs("won_value", window, fold=False).values())
        reps = sum(1 for acc in glob.accs("active", window, fold=False).values() if acc.count > 0)
        if reps > 0:
            yield Sample("sales_revenue_per_rep", {}, bounds, _rounded(revenue / reps))
        if won > 0:
            existing = sum(acc.count for acc in glob.accs("won_existing", window, False).values())
            yield Sample("sales_upsell_ratio", {}, bounds, _rounded(existing / won))
