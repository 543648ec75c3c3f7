"""What one bench run does (``BenchOptions``), the contenders, and the goals it checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamproc.exceptions import StreamprocError

__all__ = [
    "CONTENDERS",
    "DAY",
    "GOALS",
    "MARKER_REP",
    "MIB",
    "SLA_SOURCE",
    "TAKEOVER_BIG_LEADS",
    "TAKEOVER_LEADS",
    "BenchError",
    "BenchOptions",
]

DAY = 86400.0
MIB = 1024 * 1024
MARKER_REP = "bench-marker"
SLA_SOURCE = "bench-sla"
CONTENDERS = ("raw", "plain", "naive", "kpi2", "kpi1", "takeover")
TAKEOVER_LEADS = 100_000
"""The take-over goals are set at this many leads (and ``TAKEOVER_BIG_LEADS``)."""
TAKEOVER_BIG_LEADS = 1_000_000
PERIODS_LEADS = 100_000
"""The periods goals: a year of this many leads against its last 7 days alone."""


def _at(r: dict[str, Any], size_key: str, size: int, figure: str) -> float:
    """A take-over figure measured at the goal's size; at another size the goal is n/a."""
    if r.get(size_key) != size:
        raise KeyError(figure)
    return float(r[figure])


GOALS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "events_per_s >= 2.5x naive": lambda r: (
        r["events_per_s"] / r["naive_faust_events_per_s"] >= 2.5
    ),
    "events_per_s >= 0.8x plain Faust": lambda r: (
        r["events_per_s"] / r["plain_faust_events_per_s"] >= 0.8
    ),
    "2 workers >= 1.7x 1 worker": lambda r: r["events_per_s_2_workers"] / r["events_per_s"] >= 1.7,
    "p99 <= 250 ms at 1,000 events/s": lambda r: r["p99_latency_ms"] <= 250,
    "alert <= 1 s": lambda r: r["alert_latency_ms"] <= 1000,
    "ratios, quantiles <= 10 s behind counts": lambda r: (
        r["freshness_max_lag_s"] <= 10 and r["freshness_unreached"] == 0
    ),
    # ``rss_mb`` is in MiB (as printed); 300 MB are 286.1 MiB.
    "RSS <= 300 MB": lambda r: r["rss_mb"] * MIB <= 300e6,
    "restart <= 5 s": lambda r: _at(r, "takeover_leads", TAKEOVER_LEADS, "takeover_restart_s") <= 5,
    "empty data dir <= 10 s": lambda r: (
        _at(r, "takeover_leads", TAKEOVER_LEADS, "takeover_empty_s") <= 10
    ),
    "handover SIGTERM <= 3 s": lambda r: (
        _at(r, "takeover_leads", TAKEOVER_LEADS, "handover_sigterm_s") <= 3
    ),
    "handover SIGKILL <= session timeout + 3 s": lambda r: (
        _at(r, "takeover_leads", TAKEOVER_LEADS, "handover_sigkill_s") <= r["session_timeout_s"] + 3
    ),
    "RSS at 1M leads <= 400 MB": lambda r: (
        _at(r, "takeover_big_leads", TAKEOVER_BIG_LEADS, "rss_1m_leads_mb") * MIB <= 400e6
    ),
    "periods: RSS within 10 % of 7 days": lambda r: (
        _at(r, "periods_leads", PERIODS_LEADS, "periods_rss_mb") <= 1.1 * r["periods_7d_rss_mb"]
    ),
    "periods: take-over within 10 % of 7 days": lambda r: (
        _at(r, "periods_leads", PERIODS_LEADS, "periods_takeover_s")
        <= 1.1 * r["periods_7d_takeover_s"]
    ),
    "restart at 1M leads <= 15 s": lambda r: (
        _at(r, "takeover_big_leads", TAKEOVER_BIG_LEADS, "takeover_restart_1m_s") <= 15
    ),
}
"""The issue's goals, checked on the JSON figures (a missing figure: not checked)."""


class BenchError(StreamprocError):
    """A contender could not run (did not start, crashed): the message says which and why."""


@dataclass(frozen=True)
class BenchOptions:
    """What one bench run does; ``quick_preset()`` is the ``--quick`` preset."""

    events: int = 1_000_000
    leads: int | None = None
    """Leads in the history; default: one per 10 events."""
    reps: int = 100
    span_days: float = 7.0
    """The history covers this many days up to now (7: everything is in the 7d window)."""
    seed: int = 0
    time_bound: float = 300.0
    """Seconds a throughput contender may run once ready; then its count so far is used."""
    start_timeout: float = 120.0
    catch_up: float = 900.0
    """Seconds the one-worker run may take, past its time bound, to finish the history before
    the latency run (whose worker should hold all of it)."""
    latency_seconds: float = 60.0
    latency_rate: float = 1000.0
    marker_interval: float = 0.1
    """One marker event per this many seconds during the latency run."""
    scrape_interval: float = 15.0
    """/metrics scrapes during the latency run: checks, and the load of a Prometheus with
    the shipped config (15 s). A scrape costs the worker's loop ~1 s at 100,000 leads."""
    freshness_seconds: float = 60.0
    """Length of the freshness probe (whole series against their counts, one probe a second)."""
    freshness_wait: float = 10.0
    """Seconds /metrics is still scraped after the last probe: the goal's 10 s (a probe not
    reached by then counts as unreached, failing the goal)."""
    alert_sla: float = 2.0
    """The SLA (seconds) of the probe leads' source, set as an override for that source."""
    alert_probes: int = 10
    alert_wait: float = 10.0
    """Seconds to wait for the last probe's alert after its due time."""
    contenders: tuple[str, ...] = CONTENDERS
    takeover_leads: int = TAKEOVER_LEADS
    """Leads of the take-over part's history (~4.35 events each over 6 days); 0: skipped."""
    takeover_big_leads: int = TAKEOVER_BIG_LEADS
    """Leads of its second history (peak RSS, restart); 0: skipped."""
    periods_leads: int = PERIODS_LEADS
    """Leads of the periods part's year (its last 7 days are measured too); 0: skipped."""
    takeover_timeout: float = 900.0
    """Seconds a worker may take to build a take-over history, or to serve it again."""
    handover_settle: float = 10.0
    """Seconds two workers run together, exact, before one is stopped (standbys warm up)."""
    profile: Path | None = None
    """Write a py-spy profile of the one-worker throughput run here (a directory)."""
    workdir: Path | None = None
    keep_workdir: bool = False
    quick: bool = False

    @classmethod
    def quick_preset(cls, **overrides: Any) -> BenchOptions:
        values: dict[str, Any] = {
            "events": 200_000,
            "time_bound": 10.0,
            "catch_up": 60.0,
            "start_timeout": 60.0,
            "latency_seconds": 10.0,
            "freshness_seconds": 20.0,
            "alert_probes": 3,
            "alert_wait": 3.0,
            "takeover_leads": 10_000,
            "takeover_big_leads": 0,
            "periods_leads": 0,  # a year of history is not quick
            "takeover_timeout": 300.0,
            "quick": True,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def lead_count(self) -> int:
        return self.leads if self.leads is not None else max(1, self.events // 10)
