"""Typed helpers over grafana-foundation-sdk that every dashboard shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

__all__ = [
    "CURRENCY_UNIT",
    "DATASOURCE",
    "SLA_SECONDS",
    "TAGS",
    "PanelBuilder",
    "Query",
    "Step",
    "big_stat",
    "finish",
    "leaderboard",
    "links",
    "merged_table",
    "section",
    "trend",
    "variable",
]

PROMETHEUS_UID = "prometheus"
"""The uid provisioned in grafana/provisioning/datasources/prometheus.yaml."""
DATASOURCE = dashboard_model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
CURRENCY_UNIT = "currencyUSD"
"""The reporting currency of ``deal_value`` (outputs.md: base units, the reporting currency)."""
SLA_SECONDS = 300
"""STREAMPROC_RESPONSE_SLA_SECONDS default: thresholds on response times are relative to it."""
TAGS = ["streamproc"]

PanelBuilder = Builder[dashboard_model.Panel]
Step = tuple[float | None, str]
"""A threshold step: from this value (None: from minus infinity) on, this colour."""


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel; refIds are given in order (A, B, ...)."""

    expr: str
    legend: str = ""


def _thresholds(steps: Sequence[Step]) -> dashboard_builder.ThresholdsConfig:
    return (
        dashboard_builder.ThresholdsConfig()
        .mode(dashboard_model.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_model.Threshold(value=v, color=c) for v, c in steps])
    )


def _targets(queries: Sequence[Query], instant: bool) -> list[Builder[Dataquery]]:
    targets: list[Builder[Dataquery]] = []
    for index, query in enumerate(queries):
        target = (
            prometheus.Dataquery()
            .expr(query.expr)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
            .legend_format(query.legend or "__auto")
        )
        targets.append(target.instant() if instant else target.range())
    return targets


def big_stat(
    title: str,
    queries: Sequence[Query],
    unit: str,
    steps: Sequence[Step],
    description: str,
    width: int = 4,
    height: int = 6,
) -> stat.Panel:
    """A wallboard tile: one big number, background coloured by thresholds, no sparkline."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries, instant=True))
        .unit(unit)
        .thresholds(_thresholds(steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE)
        .justify_mode(common.BigValueJustifyMode.CENTER)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .text(common_builder.VizTextDisplayOptions().title_size(22).value_size(72))
        .decimals(1 if unit in ("s", "percentunit") else 0)
        .span(width)
        .height(height)
    )


def leaderboard(
    title: str,
    queries: Sequence[Query],
    unit: str,
    steps: Sequence[Step],
    description: str,
    width: int = 8,
    height: int = 10,
    maximum: float | None = None,
    no_value: str | None = None,
) -> bargauge.Panel:
    """Horizontal bars, one per series, in the order of the query (use ``sort_desc``).
    ``no_value``: what the panel says when its query has no series (Grafana's "No data"
    otherwise), e.g. what to configure."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries, instant=True))
        .unit(unit)
        .min(0)
        .thresholds(_thresholds(steps))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .value_mode(common.BarGaugeValueMode.COLOR)
        .name_placement(common.BarGaugeNamePlacement.LEFT)
        .show_unfilled(True)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .text(common_builder.VizTextDisplayOptions().title_size(18).value_size(28))
        .span(width)
        .height(height)
    )
    if no_value is not None:
        panel = panel.no_value(no_value)
    return panel.max(maximum) if maximum is not None else panel


def merged_table(
    title: str,
    queries: Sequence[Query],
    columns: dict[str, str],
    description: str,
    width: int = 12,
    height: int = 10,
) -> table.Panel:
    """A table of instant queries joined on their labels (Grafana's merge): one row per
    label set, one column per query. ``columns``: the value column of each query (``Value
    #A``...) and each label kept -> its header, in order; the rest is hidden."""
    targets = []
    for target in _targets(queries, instant=True):
        assert isinstance(target, prometheus.Dataquery)
        targets.append(target.format(prometheus_model.PromQueryFormat.TABLE))
    organize = {
        "excludeByName": {"Time": True},
        "indexByName": {name: i for i, name in enumerate(columns)},
        "renameByName": columns,
    }
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .with_transformation(dashboard_model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dashboard_model.DataTransformerConfig(id_val="organize", options=organize)
        )
        .span(width)
        .height(height)
    )


def trend(
    title: str,
    queries: Sequence[Query],
    unit: str,
    description: str,
    width: int = 12,
    height: int = 8,
    sla_line: float | None = None,
) -> timeseries.Panel:
    """A time series; ``sla_line`` draws a dashed red threshold line at that value."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries, instant=False))
        .unit(unit)
        .line_width(2)
        .fill_opacity(10)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
        .span(width)
        .height(height)
    )
    if sla_line is None:
        return panel
    return panel.thresholds(
        _thresholds([(None, "transparent"), (sla_line, "red")])
    ).thresholds_style(
        common_builder.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    )


def section(
    board: dashboard_builder.Dashboard, title: str, panels: Sequence[PanelBuilder]
) -> dashboard_builder.Dashboard:
    """An expanded row, its panels following it at the top level (the SDK lays them out)."""
    board = board.with_row(dashboard_builder.Row(title).collapsed(False))
    for panel in panels:
        board = board.with_panel(panel)
    return board


def variable(
    name: str, label: str, query: str, multi: bool = True, default: str | None = None
) -> dashboard_builder.QueryVariable:
    """A ``label_values`` variable; multi ones offer All as the regex ``.*``."""
    built = (
        dashboard_builder.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        built = built.all_value(".*").current(
            dashboard_model.VariableOption(selected=True, text="All", value="$__all")
        )
    if default is not None:
        built = built.current(
            dashboard_model.VariableOption(selected=True, text=default, value=default)
        )
    return built


def choice(name: str, label: str, options: Sequence[str]) -> dashboard_builder.CustomVariable:
    """A fixed list of values, the first one current (e.g. the period of the quota panels)."""
    return (
        dashboard_builder.CustomVariable(name)
        .label(label)
        .values(",".join(options))
        .options(
            [
                dashboard_model.VariableOption(selected=i == 0, text=option, value=option)
                for i, option in enumerate(options)
            ]
        )
        .current(dashboard_model.VariableOption(selected=True, text=options[0], value=options[0]))
    )


def links() -> list[Builder[dashboard_model.DashboardLink]]:
    """A drop-down to the other streamproc dashboards (by tag)."""
    return [
        dashboard_builder.DashboardLink("streamproc dashboards")
        .type(dashboard_model.DashboardLinkType.DASHBOARDS)
        .tags(TAGS)
        .as_dropdown(True)
        .include_vars(False)
        .keep_time(True)
    ]


def finish(board: dashboard_builder.Dashboard) -> dashboard_model.Dashboard:
    """Build, and number every panel and row: the SDK leaves ``id`` unset."""
    model = board.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return model
