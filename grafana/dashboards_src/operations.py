"""streamproc operations: throughput, dead letters, delay, lag, alerts and workers."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from .panels import TAGS, PanelBuilder, Query, big_stat, finish, links, section, trend

__all__ = ["UID", "build"]

UID = "streamproc-operations"
RATE = "[$__rate_interval]"
EVENTS = f"rate(streamproc_events_total{RATE})"
INVALID = f'rate(streamproc_events_total{{outcome="invalid"}}{RATE})'
UP = 'up{job="streamproc"}'


def _delay(quantile: str) -> Query:
    buckets = f"sum by (le) (rate(streamproc_event_delay_seconds_bucket{RATE}))"
    return Query(f"histogram_quantile({quantile}, {buckets})", f"p{round(float(quantile) * 100)}")


def _overview() -> list[PanelBuilder]:
    return [
        big_stat(
            "Workers up",
            [Query(f"count({UP} == 1) or vector(0)")],
            "none",
            [(None, "red"), (1, "orange"), (2, "green")],
            "Workers Prometheus scrapes successfully (job streamproc).",
        ),
        big_stat(
            "Events per second",
            [Query(f"sum({EVENTS}) or vector(0)")],
            "reqps",
            [(None, "blue")],
            "Events consumed per second, every outcome.",
        ),
        big_stat(
            "Dead letters per second",
            [Query(f"sum({INVALID}) or vector(0)")],
            "reqps",
            [(None, "green"), (0.01, "orange"), (1, "red")],
            "Invalid events sent to the dead-letter topic.",
        ),
        big_stat(
            "Processing delay p99",
            [_delay("0.99")],
            "s",
            [(None, "green"), (1, "orange"), (2, "red")],
            "From a message's append time to its effect on the KPIs.",
        ),
        big_stat(
            "Consumer lag",
            [Query("sum(streamproc_consumer_lag_messages) or vector(0)")],
            "none",
            [(None, "green"), (1000, "orange"), (10000, "red")],
            "Messages not yet consumed, all topics and partitions.",
        ),
        big_stat(
            "Alerts in the last hour",
            [Query("sum(increase(streamproc_alerts_total[1h])) or vector(0)")],
            "none",
            [(None, "blue")],
            "Response-time alerts published in the last hour, every kind.",
        ),
    ]


def _trends() -> list[PanelBuilder]:
    return [
        trend(
            "Events per second by outcome",
            [Query(f"sum by (outcome) ({EVENTS})", "{{outcome}}")],
            "reqps",
            "processed, invalid (dead letter), duplicate, late.",
        ),
        trend(
            "Dead letters",
            [
                Query(f"sum by (topic) ({INVALID})", "{{topic}} per second"),
                Query(f"sum({INVALID}) / sum({EVENTS})", "share of all events"),
            ],
            "short",
            "Invalid events per second by input topic, and their share of all events.",
        ),
        trend(
            "Processing delay",
            [_delay("0.5"), _delay("0.9"), _delay("0.99")],
            "s",
            "Quantiles of the delay from append time to effect on the KPIs.",
            sla_line=2,
        ),
        trend(
            "Consumer lag by partition",
            [
                Query(
                    "sum by (topic, partition) (streamproc_consumer_lag_messages)",
                    "{{topic}} [{{partition}}]",
                )
            ],
            "none",
            "Messages behind the end of each partition, as the owning worker sees it.",
        ),
        trend(
            "Alerts published by kind",
            [
                Query(
                    f"sum by (kind) (increase(streamproc_alerts_total{RATE}))",
                    "{{kind}}",
                )
            ],
            "none",
            "response_sla_breached (level 1 and 2) and response_sla_resolved.",
        ),
        trend(
            "Workers",
            [
                Query(f"count({UP} == 1) or vector(0)", "up"),
                Query(f"max by (instance) ({UP})", "{{instance}}"),
            ],
            "none",
            "Workers up, and each scraped worker (1 up, 0 down).",
        ),
    ]


def build() -> dashboard_model.Dashboard:
    """The operations dashboard of the workers themselves."""
    board = (
        dashboard_builder.Dashboard("streamproc operations")
        .uid(UID)
        .description("Health of the streamproc workers: throughput, errors, delay and lag.")
        .tags([*TAGS, "operations"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .readonly()
        .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR)
        .links(links())
    )
    board = section(board, "Now", _overview())
    return finish(section(board, "Over time", _trends()))
