"""Periods: a new worker's peak memory and time to serve exact KPIs after 12 months of
history, against the same figures for the last 7 days of that history alone.

Two histories, each on its own broker, measured one after the other in one run: a year of
``periods_leads`` leads, and the events of its last 7 days only. A worker reads each and
forgets the leads past retention (the periods keep them as rollups);
once its KPIs have settled (``takeover.settle``), that is the truth. It stops (SIGTERM), and a
new worker with an empty data dir takes over: the seconds from its start to its first
scrape serving the truth, and its peak RSS, are the figures (``periods_takeover_s``,
``periods_rss_mb``; ``periods_7d_takeover_s``, ``periods_7d_rss_mb``). The periods cost no
lead memory when the two pairs are close.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from typing import Any, TextIO

from benchmarks.options import DAY, BenchError, BenchOptions
from benchmarks.processes import CpuWatch, WorkerHandle
from benchmarks.session import BenchRun, phase, produce_events
from benchmarks.takeover import (
    ENDED_AGO,
    EVENTS_PER_LEAD,
    QUIET_FLOOR,
    _discard,
    _open,
    _Part,
    _peak_mib,
    _scrape,
    _terminate,
    noon_zone,
    settle,
)
from streamproc.config import Settings
from streamproc.tools.sales_team import SimEvent, history, rfc3339

__all__ = ["run_periods"]

YEAR_DAYS = 365.0
WEEK_DAYS = 7.0
# Prunes every 10 s (60 s by default): a topic partition not fetched for a prune interval
# counts as idle, not behind (``Engine._more_may_come``); at 1 s, under a backlog on a busy
# machine, 10,000 leads were forgotten 23,469 times (the rest of their lives came later).
PRUNE_SECONDS = 10.0
QUIET_SECONDS = 2.5 * PRUNE_SECONDS  # no lead forgotten for this long: done forgetting
_EVICTED = re.compile(rb"evicted (\d+) leads")


class _History(_Part):
    """A periods history on its own broker (``_Part``'s workers, scrapes and waits)."""

    def __init__(self, run: BenchRun, events: list[SimEvent], log: TextIO) -> None:
        self.run = run
        self.leads = len({event["lead_id"] for _, event in events if "lead_id" in event})
        run.settings = run.settings.model_copy(update={"timezone": noon_zone(time.time())})
        self.base = run.worker_settings("periods").model_copy(
            update={"prune_interval_seconds": PRUNE_SECONDS}
        )
        self.events = len(events)
        with phase(run, "produce"):
            asyncio.run(produce_events(run.settings, iter(events), self.events, log))
        self.start_waits()

    def settle_forgotten(self, worker: WorkerHandle) -> int:
        """Wait until the worker has forgotten what it will and its KPIs have settled
        (``settle``; a lead forgotten counts as a change): that is the truth. Returns the
        leads it forgot."""
        try:
            self.truth_at, self.truth = settle(
                lambda: _scrape([worker]),
                self.run.options.takeover_timeout,
                lambda: _forgotten(worker),
                floor=max(QUIET_FLOOR, QUIET_SECONDS),
            )
        except BenchError as exc:
            raise BenchError(f"periods: {exc}") from None
        return _forgotten(worker)


def _forgotten(worker: WorkerHandle) -> int:
    return sum(int(n) for n in _EVICTED.findall(worker.log_path.read_bytes()))


def _measure(
    settings: Settings, options: BenchOptions, out: TextIO, name: str, events: list[SimEvent]
) -> dict[str, Any]:
    run = _open(settings, options, out, name)
    figures: dict[str, Any] = {}
    cpu = CpuWatch([os.getpid(), run.broker.pid])
    try:
        part = _History(run, events, sys.stderr)
        run.log(f"{name}: {part.events:,} events of {part.leads:,} leads; {run.workdir}")
        with phase(run, "build"):
            first, figures[f"{name}_build_s"] = part.build("a")
        figures[f"{name}_forgotten_leads"] = part.settle_forgotten(first)
        figures[f"{name}_series"] = len(part.truth)
        _terminate(first)
        with phase(run, "takeover"):
            started = time.monotonic()
            fresh = part.start("b")
            try:
                figures[f"{name}_takeover_s"] = part.wait_serving([fresh], started, "takeover")
                figures[f"{name}_rss_mb"] = _peak_mib(fresh)
                # where the seconds went: until /readyz, then each scrape (the exact one last)
                figures[f"{name}_ready_s"] = part.ready_s
                figures[f"{name}_scrapes"] = part.scrapes["takeover"]
            finally:
                _discard([fresh])
        figures[f"{name}_leads"] = part.leads
        figures[f"{name}_events"] = part.events
    finally:
        run.close()
    figures[f"{name}_foreign_cpu_cores"] = cpu.foreign_cores()
    return figures


def run_periods(settings: Settings, options: BenchOptions, out: TextIO) -> dict[str, Any]:
    """A year of ``options.periods_leads`` leads, then its last 7 days alone."""
    end = time.time() - ENDED_AGO
    count = round(options.periods_leads * EVENTS_PER_LEAD)
    year = list(
        history(
            settings,
            count,
            options.periods_leads,
            YEAR_DAYS * DAY,
            reps=options.reps,
            seed=options.seed,
            end=end,
            outcomes=True,  # a year of customers, costs and NPS answers too
        )
    )
    since = rfc3339(end - WEEK_DAYS * DAY)
    week = [(kind, event) for kind, event in year if event["occurred_at"] >= since]
    figures = {"periods_leads": options.periods_leads}
    figures.update(_measure(settings, options, out, "periods", year))
    figures.update(_measure(settings, options, out, "periods_7d", week))
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
