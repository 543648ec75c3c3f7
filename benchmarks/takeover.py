"""Take-over: how long until workers serve every series exactly again after a restart, from
an empty data dir, or when one of two workers stops (SIGTERM, SIGKILL); and the peak memory
of a worker holding 1,000,000 leads.

The workers are black boxes (``streamproc worker`` subprocesses, each with its own data dir
and web port, all in one consumer group); the history comes from an outside producer. The
truth is what the worker that built the history served before it was stopped, once settled
(``settle``): a history that ended hours ago, so that no series moves with the clock (see
``takeover_history``), checked against the number of leads produced. A figure is the
seconds from the start of the new worker (or from the signal, for a hand-over) to the end
of the first scrape of /metrics whose ``sales_*`` series all equal the truth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from benchmarks.options import DAY, BenchError, BenchOptions
from benchmarks.processes import CpuWatch, WorkerHandle, stop_workers
from benchmarks.session import BenchRun, phase, produce_events
from benchmarks.throughput import follow_commits, split_between, wait_ready
from streamproc.config import Settings
from streamproc.tools.net import free_port
from streamproc.tools.sales_team import SimEvent, history
from streamproc.worker.partials import FULL_PUBLISH_SECONDS

__all__ = [
    "EVENTS_PER_LEAD",
    "Quiet",
    "Served",
    "differences",
    "parse_series",
    "run_takeover",
    "session_timeout",
    "settle",
]

EVENTS_PER_LEAD = 4.34648
"""Events per lead of the take-over histories: the simulator's lives over 6 days gave
434,648 events for 100,000 leads (issue 19's measurement), and 4,351,355 for 1,000,000."""
SPAN_DAYS = 6.0
ENDED_AGO = 3 * 3600.0
"""The history ends this long before the run: past the 1h window and the minute buckets
kept (120 min), every SLA long breached (no alert: older than the backfill horizon), the
oldest event ~6 days old (inside the 7d window); with the workers' ``today`` in a zone where
it is noon, no series but the now-dependent one changes for hours."""
NOW_DEPENDENT = (b"sales_oldest_awaiting_contact_seconds",)
"""Series whose value is "now minus a time": compared as that time, within the scrape's span."""

QUIET_FLOOR = 2 * FULL_PUBLISH_SECONDS
"""Seconds a worker's /metrics must stay the same before it counts as settled (``Quiet``):
a partition's partial summaries are all sent again once 30 s have passed since they last
were, one partition a round (``FullRounds``)."""

QUIET_CAP = 4 * FULL_PUBLISH_SECONDS
"""The longest quiet span ``Quiet`` asks for, however far apart the changes came: past
every partition's full re-send (``QUIET_FLOOR``) twice over."""

Served = dict[bytes, float]
"""``sales_*`` series of a /metrics text: the sample line up to its value -> the value."""
Scrape = tuple[float, Served, float]
"""(wall time in the middle of a scrape, its series, its seconds)"""


class Quiet:
    """When a worker's scrapes have settled: unchanged for ``floor`` seconds, and for three
    times the longest gap seen between two changes of the served series (at most
    ``QUIET_CAP``).

    The whole series (ratios, quantiles) reach /metrics through the partial summaries,
    published in rounds that keep to a byte budget and to a quarter of the worker's loop:
    two scrapes a second apart that agree say nothing. At 1,000,000 leads a truth taken
    that way had 33,411 series; the same worker went on changing (2 - 8 s apart) for ~30 s
    more, to 34,585 (1,200 missing from the first, 26 extra, 5,473 other values).

    A change of the marker alone (a lead forgotten) restarts the quiet span but is not a
    gap between rounds: a year's builder forgot single leads 86 s and 150 s after its
    build (their retention ran out on the wall clock), and three times that gap passed the
    quick preset's 300 s timeout (7 Dec, 94b1a95)."""

    def __init__(self, floor: float, start: float) -> None:
        self.floor = floor
        self.changed_at = start
        self.served_changed_at = start
        self.longest_gap = 0.0

    def settled(self, changed: bool, at: float, *, marker_only: bool = False) -> bool:
        """A scrape at ``at`` (monotonic) that ``changed`` from the one before (``marker_only``:
        only the marker did): settled?"""
        if changed:
            if not marker_only:
                self.longest_gap = max(self.longest_gap, at - self.served_changed_at)
                self.served_changed_at = at
            self.changed_at = at
            return False
        return at - self.changed_at >= max(self.floor, min(3 * self.longest_gap, QUIET_CAP))


def settle(
    scrape: Callable[[], Scrape],
    timeout: float,
    marker: Callable[[], object] = lambda: None,
    *,
    floor: float = QUIET_FLOOR,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[float, Served]:
    """Scrape until the series are settled (``Quiet``): (the wall time of the last scrape,
    its series). ``marker``: something else whose change counts as a change (the leads a
    worker forgot). Raises after ``timeout`` seconds."""
    deadline = clock() + timeout
    at, before, took = scrape()
    mark = marker()
    quiet = Quiet(floor, clock())
    while True:
        sleep(max(1.0, took))  # a scrape costs the worker ~1 s at 100,000 leads
        now, served, took = scrape()
        now_mark = marker()
        served_changed = bool(differences(served, before, now - at, took + 1.0))
        marked = now_mark != mark
        if quiet.settled(served_changed or marked, clock(), marker_only=not served_changed):
            return now, served
        if clock() > deadline:
            raise BenchError(f"the served KPIs did not settle in {timeout:g}s")
        at, before, mark = now, served, now_mark


def parse_series(text: bytes) -> Served:
    """The ``sales_*`` samples of a /metrics text (a plain split: ~10x faster than a parser)."""
    out: Served = {}
    for line in text.splitlines():
        if line.startswith(b"sales_"):
            key, _, value = line.rpartition(b" ")
            out[key] = float(value)
    return out


def differences(got: Served, truth: Served, drift: float, slack: float) -> list[str]:
    """What differs (at most 5, and how many): empty when ``got`` serves the truth exactly.

    ``drift``: seconds between the truth's scrape and this one (now-dependent series grow by
    it); ``slack``: how far apart the two scrapes' own clocks may be (their durations)."""
    out: list[str] = []
    missing = truth.keys() - got.keys()
    extra = got.keys() - truth.keys()
    for key in sorted(missing)[:3]:
        out.append(f"missing {key.decode()}")
    for key in sorted(extra)[:3]:
        out.append(f"extra {key.decode()} {got[key]:g}")
    wrong = 0
    for key in truth.keys() & got.keys():
        want, value = truth[key], got[key]
        if key.startswith(NOW_DEPENDENT) and want > 0:
            ok = abs(value - (want + drift)) <= slack
        else:
            ok = abs(value - want) <= 1e-9 * max(1.0, abs(want))
        if not ok:
            wrong += 1
            if wrong <= 3:
                out.append(f"{key.decode()} {value:g}, truth {want:g}")
    if missing or extra or wrong:
        out.append(f"({len(missing)} missing, {len(extra)} extra, {wrong} wrong)")
    return out


def takeover_history(
    settings: Settings, leads: int, options: BenchOptions, end: float
) -> tuple[Iterator[SimEvent], int]:
    count = round(leads * EVENTS_PER_LEAD)
    # with the business events (see ``run._history``): the customers' state is taken over too
    events = history(
        settings,
        count,
        leads,
        SPAN_DAYS * DAY,
        reps=options.reps,
        seed=options.seed,
        end=end,
        outcomes=True,
    )
    return events, count


def noon_zone(now: float) -> str:
    """An Etc/GMT zone in which ``now`` is between 11:00 and 13:00: ``today`` stays put."""
    offset = 12 - datetime.fromtimestamp(now, UTC).hour  # Etc/GMT signs are inverted
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def session_timeout(settings: Settings) -> float:
    """The consumer session timeout the workers run with (a SIGKILLed worker's partitions
    wait that long for the group to notice), read from the Faust app they build."""
    from streamproc.kafka.app import create_app

    return float(create_app(settings).conf.broker_session_timeout)


class _Part:
    """One take-over history on its own broker, and the workers started on it."""

    def __init__(self, run: BenchRun, leads: int, log: TextIO) -> None:
        self.run = run
        self.leads = leads
        now = time.time()
        run.settings = run.settings.model_copy(update={"timezone": noon_zone(now)})
        self.base = run.worker_settings("takeover")
        events, self.events = takeover_history(run.settings, leads, run.options, now - ENDED_AGO)
        with phase(run, "produce"):
            asyncio.run(produce_events(run.settings, events, self.events, log))
        self.start_waits()

    def start_waits(self) -> None:
        """What ``settle_truth`` and ``wait_serving`` keep (a subclass calls it too)."""
        self.truth: Served = {}
        self.truth_at = 0.0
        self.ready_s: float | None = None
        # per figure, the seconds of each /metrics scrape it took until one was exact
        self.scrapes: dict[str, list[float]] = {}

    def start(self, name: str) -> WorkerHandle:
        """A worker with the data dir ``name`` (kept between its runs) and a new web port."""
        own = self.base.model_copy(
            update={"web_port": free_port(), "data_dir": self.base.data_dir / name}
        )
        own.data_dir.mkdir(parents=True, exist_ok=True)
        self.run.check_code(name)
        return WorkerHandle(own, self.run.workdir / f"takeover-{name}.log").start()

    def build(self, name: str) -> tuple[WorkerHandle, float]:
        """A worker that reads the whole history: (it, seconds from its start to all of the
        history committed)."""
        started = time.monotonic()
        worker = self.start(name)
        timeout = self.run.options.takeover_timeout
        wait_ready([worker], timeout)
        end, committed = asyncio.run(
            follow_commits(
                worker.settings, set(self.run.input_topics), self.events, started, timeout
            )
        )
        if committed < self.events:
            stop_workers([worker])
            raise BenchError(f"take-over: {committed} of {self.events} events in {timeout:g}s")
        return worker, end - started

    def settle_truth(self, workers: Sequence[WorkerHandle]) -> None:
        """The truth: the workers' series once settled (``settle``: the last partial
        summaries are in), checked against the history (every lead created counted once in
        the 7d window)."""
        try:
            now, served = settle(lambda: _scrape(workers), self.run.options.takeover_timeout)
        except BenchError as exc:
            raise BenchError(f"take-over: {exc}") from None
        created = sum(v for k, v in served.items() if _leads_created_7d(k))
        if round(created) != self.leads:
            raise BenchError(
                f"take-over: the workers count {created:g} leads created in 7d, "
                f"the history has {self.leads}: the truth would be wrong"
            )
        self.truth, self.truth_at = served, now

    def wait_serving(self, workers: Sequence[WorkerHandle], since: float, name: str) -> float:
        """Seconds from ``since`` (monotonic) to the end of the first scrape of ``workers``
        that serves the truth. /readyz is polled first (cheap); then /metrics, which costs
        the worker ~1 s at 100,000 leads, so the next scrape waits as long as the last one
        took: polling takes at most half of the worker's time. /readyz must show every
        partition owned: a survivor still answers it from before the rebalance, and a
        scrape then showed its half only (2.0 s at 20,000 leads, and as long again waited
        after it, while the survivor rejoined). ``self.ready_s``: seconds from ``since``
        until all answered /readyz so; ``self.scrapes[name]``: the seconds of
        each scrape, the exact one last (how much of ready-to-exact is one slow render,
        how much is state not served yet)."""
        deadline = since + self.run.options.takeover_timeout
        diff: list[str] = ["not ready"]
        self.ready_s = None
        scrapes = self.scrapes[name] = []
        while time.monotonic() < deadline:
            owned = [w.readiness() for w in workers]
            if any(p is None for p in owned) or not split_between(owned, self.base.partitions):
                time.sleep(0.1)
                continue
            if self.ready_s is None:
                self.ready_s = time.monotonic() - since
            now, served, took = _scrape(workers)
            scrapes.append(round(took, 2))
            diff = differences(served, self.truth, now - self.truth_at, took + 1.0)
            if not diff:
                return time.monotonic() - since
            time.sleep(max(0.2, took))
        raise BenchError(
            f"take-over: not serving the truth {self.run.options.takeover_timeout:g}s "
            f"after the start: {'; '.join(diff)}"
        )


def _leads_created_7d(key: bytes) -> bool:
    return key.startswith(b"sales_leads_created{") and b'window="7d"' in key


def _scrape(workers: Sequence[WorkerHandle]) -> Scrape:
    """The series summed over ``workers`` (see ``Scrape``)."""
    t0 = time.time()
    total: Served = {}
    for worker in workers:
        for key, value in parse_series(worker.metrics()).items():
            total[key] = total.get(key, 0.0) + value
    t1 = time.time()
    return (t0 + t1) / 2, total, t1 - t0


def _terminate(worker: WorkerHandle) -> float:
    """SIGTERM and wait: the seconds the worker took to exit."""
    started = time.monotonic()
    worker.stop(timeout=120.0)
    return time.monotonic() - started


def _discard(workers: Sequence[WorkerHandle]) -> None:
    """SIGKILL: the figures are taken, the state is thrown away (a SIGTERM costs ~6 s)."""
    for worker in workers:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()
        worker.stop()


def _peak_mib(worker: WorkerHandle) -> float:
    return worker.memory().get("VmHWM", 0.0)


def _restart_and_empty(part: _Part, figures: dict[str, Any]) -> WorkerHandle:
    """Build, restart on the same data dir, then a new worker with an empty data dir,
    which is returned running."""
    run = part.run
    with phase(run, "build"):
        first, figures["takeover_build_s"] = part.build("a")
    part.settle_truth([first])
    figures["takeover_series"] = len(part.truth)
    figures["takeover_stop_s"] = _terminate(first)
    with phase(run, "restart"):
        started = time.monotonic()
        again = part.start("a")
        figures["takeover_restart_s"] = part.wait_serving([again], started, "restart")
        figures["takeover_restart_ready_s"] = part.ready_s
    _terminate(again)
    with phase(run, "empty"):
        started = time.monotonic()
        fresh = part.start("b")
        try:
            figures["takeover_empty_s"] = part.wait_serving([fresh], started, "empty")
            figures["takeover_empty_ready_s"] = part.ready_s
        except BaseException:
            stop_workers([fresh])
            raise
    return fresh


def _handovers(part: _Part, running: WorkerHandle, figures: dict[str, Any]) -> None:
    """SIGTERM, then SIGKILL, of one of two workers: until the other alone serves the truth.

    ``running`` serves the truth alone; ``c`` joins it (an empty data dir), both settle, and
    ``c`` gets SIGTERM; then ``c`` comes back (its data dir kept), both settle, and
    ``running`` gets SIGKILL: each time the worker stopped had run for a while with part of
    the partitions, as in a deploy or a crash."""
    run, opts = part.run, part.run.options
    workers = [running]
    try:
        for stopped, sig, key in ((1, signal.SIGTERM, "sigterm"), (0, signal.SIGKILL, "sigkill")):
            with phase(run, f"join_{key}"):
                started = time.monotonic()
                workers.append(part.start("c"))
                wait_ready(workers, opts.takeover_timeout)
                figures[f"handover_join_{key}_s"] = part.wait_serving(
                    workers, started, f"join_{key}"
                )
                time.sleep(opts.handover_settle)
            victim = workers.pop(stopped)
            with phase(run, f"handover_{key}"):
                started = time.monotonic()
                assert victim.proc is not None
                victim.proc.send_signal(sig)
                figures[f"handover_{key}_s"] = part.wait_serving(workers, started, key)
            victim.stop(timeout=120.0)
    finally:
        _discard(workers)


def run_takeover(settings: Settings, options: BenchOptions, out: TextIO) -> dict[str, Any]:
    """The take-over part: each history on its own broker, one after the other."""
    figures: dict[str, Any] = {"session_timeout_s": None}
    from benchmarks.periods import run_periods  # it builds on this module

    parts = (
        ("take-over", options.takeover_leads, _takeover_part),
        ("take-over", options.takeover_big_leads, _big_part),
        ("periods", options.periods_leads, run_periods),
    )
    for name, leads, part in parts:
        if leads <= 0:
            continue
        # A part that fails (a worker that never serves the truth, a build past the
        # timeout) does not lose the others' figures: the error goes into the JSON, and
        # the bench exits with 2 after printing them.
        try:
            done = part(settings, options, out)
        except BenchError as exc:
            figures.setdefault("takeover_errors", []).append(f"{name}, {leads:,} leads: {exc}")
            out.write(f"{name} at {leads:,} leads failed: {exc}\n")
            continue
        figures.update(done)
        out.write(f"{name} at {leads:,} leads: {json.dumps(done, separators=(',', ':'))}\n")
    return figures


def _open(settings: Settings, options: BenchOptions, out: TextIO, name: str) -> BenchRun:
    opts = options
    if options.workdir is not None:
        opts = dataclasses.replace(options, workdir=options.workdir / name)
    run = BenchRun(settings, opts, out, part=name)
    run.start()
    return run


def _takeover_part(settings: Settings, options: BenchOptions, out: TextIO) -> dict[str, Any]:
    run = _open(settings, options, out, "takeover")
    figures: dict[str, Any] = {"takeover_leads": options.takeover_leads}
    cpu = CpuWatch([os.getpid(), run.broker.pid])
    part: _Part | None = None
    try:
        part = _Part(run, options.takeover_leads, sys.stderr)
        figures["takeover_events"] = part.events
        figures["session_timeout_s"] = session_timeout(part.base)
        run.log(
            f"take-over: {part.events:,} events of {part.leads:,} leads over {SPAN_DAYS:g} "
            f"days; work dir {run.workdir}"
        )
        fresh = _restart_and_empty(part, figures)
        _handovers(part, fresh, figures)
    finally:
        run.close()
        figures["takeover_durations"] = run.durations
        if part is not None:
            figures["takeover_scrapes"] = part.scrapes
    # The workers and the broker are waited-for children by now: their CPU is ours.
    figures["takeover_foreign_cpu_cores"] = cpu.foreign_cores()
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}


def _big_part(settings: Settings, options: BenchOptions, out: TextIO) -> dict[str, Any]:
    run = _open(settings, options, out, "takeover1m")
    figures: dict[str, Any] = {"takeover_big_leads": options.takeover_big_leads}
    cpu = CpuWatch([os.getpid(), run.broker.pid])
    part: _Part | None = None
    try:
        part = _Part(run, options.takeover_big_leads, sys.stderr)
        figures["takeover_big_events"] = part.events
        run.log(f"take-over at {part.leads:,} leads: {part.events:,} events; {run.workdir}")
        with phase(run, "build"):
            first, figures["takeover_build_1m_s"] = part.build("a")
        part.settle_truth([first])
        figures["rss_1m_build_mb"] = _peak_mib(first)
        figures["takeover_stop_1m_s"] = _terminate(first)
        with phase(run, "restart"):
            started = time.monotonic()
            again = part.start("a")
            try:
                figures["takeover_restart_1m_s"] = part.wait_serving([again], started, "restart")
                figures["takeover_restart_1m_ready_s"] = part.ready_s
                figures["rss_1m_restart_mb"] = _peak_mib(again)
            finally:
                _discard([again])
        figures["rss_1m_leads_mb"] = max(figures["rss_1m_build_mb"], figures["rss_1m_restart_mb"])
    finally:
        run.close()
        figures["takeover_1m_durations"] = run.durations
        if part is not None:
            figures["takeover_1m_scrapes"] = part.scrapes
    figures["takeover_1m_foreign_cpu_cores"] = cpu.foreign_cores()
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
