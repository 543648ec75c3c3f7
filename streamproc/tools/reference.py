"""The reference pages generated from the code: ``docs/metrics.md`` from the KPI catalogue
and the processor's own metrics, ``docs/configuration.md`` from the settings.
``python -m streamproc.tools.reference [DIR]`` writes them; a test keeps the committed
pages equal to what this makes."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from streamproc.config import Settings
from streamproc.engine.facts import FAMILIES
from streamproc.engine.windows import WINDOW_MEANINGS
from streamproc.kpis.catalogue import CATALOGUE, GLOBAL, MEASURE_FAMILIES, QUANTILES, Kind, Kpi
from streamproc.serving.prometheus import PROCESSOR_METRICS

__all__ = ["PAGES", "metrics_page", "settings_page", "settings_table", "write_reference"]

_TOPICS = {
    "response-time": "Speed to lead",
    "activity": "Activity",
    "pipeline": "Pipeline and deals",
    "email": "Email",
    "customers": "Costs, products, customers and NPS (optional business events)",
}
_KIND_TEXT = {
    Kind.COUNT: "count",
    Kind.SUM: "sum",
    Kind.RATIO: "ratio 0-1",
    Kind.MEAN: "mean",
    Kind.QUANTILES: "quantiles " + ", ".join(str(q) for q in QUANTILES),
    Kind.DEADLINES_PASSED: "count",
    Kind.PER_DISTINCT: "per rep",
}


def _labels(kpi: Kpi) -> str:
    labels = (["window"] if kpi.windowed else []) + list(kpi.series_labels)
    return ", ".join(labels) if labels else "-"


def _computed(kpi: Kpi) -> str:
    reads = [f"`{family}`" for family in kpi.reads]
    if kpi.kind is Kind.RATIO:
        den = reads[1] if len(reads) == 2 else f"({' + '.join(reads[1:])})"
        return f"{reads[0]} / {den}"
    if kpi.kind is Kind.OLDEST_AGE:
        return f"now - the oldest time in {reads[0]}; 0 for a label of {reads[1]} with none"
    if kpi.kind is Kind.TARGET_RATIO:
        return f"{reads[0]} today / the rep's daily target"
    if kpi.kind is Kind.PER_DISTINCT:
        return f"sum of {reads[0]} / distinct {reads[1]} series"
    if kpi.kind is Kind.SUM_PER_COUNT:
        return f"sum of {reads[0]} / count of {reads[1]}"
    if kpi.kind is Kind.SUM_DIFF:
        return f"sum of {reads[0]} - sum of {reads[1]}"
    if kpi.kind is Kind.ATTACH:
        return f"{reads[0]} (a, b) / {reads[1]} (a)"
    if kpi.kind is Kind.AT_START_RATIO:
        return (
            f"{reads[0]} / (live {reads[1]} - {reads[2]} in the window + {reads[0]} in the window)"
        )
    if kpi.kind is Kind.NPS:
        return f"100 x (promoters - detractors) / answers of {reads[0]}"
    if kpi.kind is Kind.TARGET:
        return "the target on `sales.targets` (or `STREAMPROC_ACTIVITY_TARGETS`)"
    if kpi.kind is Kind.TARGET_ATTAINMENT:
        return "the measure in the period (see below) / the target"
    if kpi.kind is Kind.FORECAST_COVERAGE:
        return "(sum of `won_value` in the period + live `forecast_value`) / revenue_won target"
    if kpi.kind is Kind.DEADLINES_PASSED:
        minus = f" minus those of {', '.join(reads[1:])}" if reads[1:] else ""
        return f"deadlines of {reads[0]} passed{minus}"
    return f"{_KIND_TEXT[kpi.kind]} of {reads[0]}"


def _export(kpi: Kpi) -> str:
    owner = "one owner (global)" if kpi.owner == GLOBAL else f"the owner of its `{kpi.owner}`"
    return "split: each worker its share" if kpi.split else f"whole, by {owner}"


def metrics_page() -> str:
    """``docs/metrics.md``: every metric, its labels, windows and meaning."""
    out = [
        "# Metrics",
        "",
        "<!-- Generated from the code by `python -m streamproc.tools.reference docs`; a test",
        "     keeps it in sync. Edit streamproc/kpis/catalogue.py, not this page. -->",
        "",
        "Every metric on a worker's `/metrics`, in `/kpis`, in Redis and on the metric topics.",
        "Units are base units (seconds, the reporting currency); ratios are 0-1 and are not",
        "exported while their denominator is 0. A label's distinct values are capped",
        "(`STREAMPROC_LABEL_CAP`, 500): the busiest keep their value, the rest fold into `other`.",
        "The product pairs are capped as pairs: the busiest pairs keep their labels while their",
        "products number less than the cap, the others fold into (`other`, `other`), which has",
        "no attach ratio. Each worker folds what it exports (the counts of its partitions, the",
        "series it owns) by its own busiest values: with several workers and more distinct",
        "values than the cap, a value one worker keeps may be folded into `other` by another,",
        "so `sum by` that label over the workers puts part of it in `other` (the sum over all",
        "values stays exact). Below the cap nothing folds: where per-value sums matter (a large",
        "product catalogue), keep the cap above the label's distinct values.",
        "",
        "## Windows",
        "",
        "Windowed metrics carry a label `window`, in event time; live ones have none.",
        "",
        "| `window` | meaning |",
        "| --- | --- |",
        *(f"| `{name}` | {meaning} |" for name, meaning in WINDOW_MEANINGS.items()),
        "",
        "Counts, sums, ratios and means are exact in every window. Quantiles of `month`,",
        "`quarter`, `year` and the `last_*` windows come from a sketch: within 1 % of the exact",
        "ones (docs/architecture.md, calendar periods); those of `1h`, `today`, `7d` are exact.",
        "",
        "## Targets",
        "",
        "Set with `streamproc targets` on the topic `sales.targets`. A target's measure in its",
        "period (`day`: the `today` window; `month`, `quarter`, `year`: those windows):",
        "",
        "| measure | a rep's | the team's |",
        "| --- | --- | --- |",
        *(
            f"| `{measure}` | {'sum' if is_sum else 'count'} of `{rep}` | "
            f"{'sum' if is_sum else 'count'} of `{team}` |"
            for measure, (rep, team, is_sum) in MEASURE_FAMILIES.items()
        ),
        "",
        "## Several workers",
        "",
        "Prometheus scrapes every worker; boards and rules read `sum by (...)`. *Split* series",
        "(counts, sums) are exported by every worker for its own partitions and add up; *whole*",
        "series (ratios, means, quantiles, ages, target ratios) are exported by exactly one",
        "worker, the owner of the series' key. Subscribers of the metric topics, Redis and",
        "`/kpis` see every series whole, once.",
    ]
    for topic, title in _TOPICS.items():
        out += [
            "",
            f"## {title}",
            "",
            f"Metric topic: `sales.metrics.{topic}` (with the configured prefix).",
            "",
            "| metric | labels | meaning | computed as | exported |",
            "| --- | --- | --- | --- | --- |",
        ]
        for kpi in CATALOGUE:
            if kpi.topic == topic:
                live = "" if kpi.windowed else "live: "
                out.append(
                    f"| `{kpi.name}` | {_labels(kpi)} | {live}{kpi.help} | {_computed(kpi)} "
                    f"| {_export(kpi)} |"
                )
    out += [
        "",
        "## The processor itself",
        "",
        "| metric | type | labels | meaning |",
        "| --- | --- | --- | --- |",
        *(
            f"| `{m.name}` | {m.type} | {', '.join(m.labels) or '-'} | {m.help} |"
            for m in PROCESSOR_METRICS
        ),
        "",
        "## Fact families",
        "",
        "What the engine derives from each lead's state (`streamproc/engine/facts.py`); the",
        "*computed as* column above names them. Live facts hold while the lead is in that state.",
        "",
        "| family | labels | what one fact is |",
        "| --- | --- | --- |",
        *(
            f"| `{name}` | {', '.join(f.labels) or '-'} | {'live: ' if f.live else ''}{f.meaning} |"
            for name, f in FAMILIES.items()
        ),
        "",
    ]
    return "\n".join(out)


def setting_name(field: str) -> str:
    return f"STREAMPROC_{field.upper()}"


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def settings_page() -> str:
    """``docs/configuration.md``: every setting, its default and meaning."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated from the code by `python -m streamproc.tools.reference docs`; a test",
        "     keeps it in sync. Edit the field docstrings in streamproc/config.py. -->",
        "",
        "Settings come from the environment (prefix `STREAMPROC_`) or a `.env` file in the",
        "working directory, and are validated at start-up: a bad value stops the command with",
        "one line naming the variable. JSON settings take a JSON object.",
        "`streamproc settings` prints every setting with its default and current value.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        variable = setting_name(name)
        meaning = " ".join((field.description or "").split()).removeprefix(f"{variable}: ")
        meaning = meaning.replace("``", "`").replace("|", "\\|")
        default = _default(field.get_default(call_default_factory=True))
        out.append(f"| `{variable}` | `{default}` | {meaning} |")
    out.append("")
    return "\n".join(out)


def settings_table(current: Settings) -> str:
    """What ``streamproc settings`` prints: each variable, its current value (``*`` where it
    differs from the default) and its default, then its meaning on the next line."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = _default(getattr(current, name))
        default = _default(field.get_default(call_default_factory=True))
        mark = "*" if value != default else " "
        meaning = " ".join((field.description or "").split()).removeprefix(
            f"{setting_name(name)}: "
        )
        rows.append(f"{mark} {setting_name(name)}={value}   (default: {default})")
        rows.append(
            textwrap.fill(
                meaning.replace("``", ""), 88, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
        )
    return "\n".join(["* set here (environment or .env), the rest are defaults", "", *rows])


PAGES = {"metrics.md": metrics_page, "configuration.md": settings_page}


def write_reference(docs: Path) -> list[Path]:
    """Write every generated page into ``docs``; the paths written."""
    docs.mkdir(parents=True, exist_ok=True)
    written = []
    for name, render in PAGES.items():
        path = docs / name
        path.write_text(render(), encoding="utf-8", newline="\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written in write_reference(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(f"wrote {written}")  # noqa: T201
