"""The whole bench (``run_bench``) and the backfill bench (``run_backfill_bench``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from benchmarks.freshness import freshness_run
from benchmarks.latency import Latency, latency_run
from benchmarks.metrics import events_total
from benchmarks.options import DAY, MIB, BenchError, BenchOptions
from benchmarks.processes import CpuWatch, WorkerHandle, stop_workers
from benchmarks.profiling import start_profiler, stop_profiler, top_functions
from benchmarks.report import build_figures, print_table, row
from benchmarks.session import BenchRun, phase, produce_events
from benchmarks.takeover import run_takeover
from benchmarks.throughput import (
    CONTENDER_MODULES,
    Throughput,
    catch_up,
    follow_commits,
    measure_contender,
    measure_kpi,
    wait_ready,
)
from streamproc.config import Settings, child_env
from streamproc.tools.sales_team import SimEvent, history

__all__ = ["run_backfill_bench", "run_bench", "write_history_jsonl"]


def _history(settings: Settings, options: BenchOptions) -> Iterator[SimEvent]:
    """The simulator's history the options ask for: what is produced and what is replayed.

    With the business events at the simulator's rates (``tools.outcomes``): products on
    every won deal, NPS answers after 60 % of them, churns at 3 % a month, the months'
    invoices per source; in 7 days of 200,000 events, 1,240 won deals, 391 answers, 12
    churns and 14 invoices (0.2 % of the events: a CRM sends far more lead events)."""
    return history(
        settings,
        options.events,
        options.lead_count,
        options.span_days * DAY,
        reps=options.reps,
        seed=options.seed,
        outcomes=True,
    )


async def _produce_history(settings: Settings, options: BenchOptions, stream: TextIO) -> int:
    return await produce_events(settings, _history(settings, options), options.events, stream)


def run_bench(
    settings: Settings,
    options: BenchOptions,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Run the whole bench; print the table to ``out`` (default stdout); return the figures."""
    out = out if out is not None else sys.stdout
    run = BenchRun(settings, options, out)
    wall = time.monotonic()
    results: dict[str, Throughput] = {}
    latency: Latency | None = None
    memory: dict[str, float] = {}
    profile: dict[str, Any] | None = None
    takeover: dict[str, Any] = {}
    fresh: dict[str, Any] = {}
    # The take-over part has its own histories and broker: without another contender, the
    # main history is not produced at all.
    main_part = any(name != "takeover" for name in options.contenders)
    try:
        if main_part:
            with phase(run, "setup"):
                run.start()
            run.log(
                f"bench: {options.events:,} events, {options.lead_count:,} leads, "
                f"{options.reps} reps over {options.span_days:g} days, "
                f"{run.settings.partitions} partitions; work dir {run.workdir}"
            )
            with phase(run, "produce"):
                asyncio.run(_produce_history(run.settings, options, sys.stderr))
        for name in ("raw", "plain", "naive"):
            if name in options.contenders:
                with phase(run, name):
                    results[name] = measure_contender(run, name, CONTENDER_MODULES[name])
                run.log(row(results[name]))
        if "kpi2" in options.contenders:
            with phase(run, "kpi2"):
                results["kpi2"], workers = measure_kpi(run, "kpi2", 2, profile=options.profile)
                memory["2 workers"] = max(w.memory().get("VmHWM", 0.0) for w in workers)
                stop_workers(workers)
            run.log(row(results["kpi2"]))
        if "kpi1" in options.contenders:
            with phase(run, "kpi1"):
                results["kpi1"], workers = measure_kpi(run, "kpi1", 1, profile=options.profile)
            run.log(row(results["kpi1"]))
            worker = workers[0]
            try:
                if not results["kpi1"].reached:
                    # Latency and memory are about a worker that holds the whole history.
                    with phase(run, "kpi1_catch_up"):
                        caught_up = catch_up(run, worker)
                    results["kpi1"].extra["caught_up"] = caught_up
                    if not caught_up:
                        run.log("  (the worker did not catch up: latency includes a backlog)")
                spy = None
                if options.profile is not None:
                    spy = start_profiler(worker.pid, options.profile, "worker-live")
                with phase(run, "latency"):
                    latency = asyncio.run(latency_run(worker, options, run.tag, run.broker.pid))
                if spy is not None:
                    stop_profiler(spy)
                memory.update(worker.memory())  # before the freshness probe's 1 s scrapes
                with phase(run, "freshness"):
                    fresh = asyncio.run(freshness_run(worker, options, run.tag)).figures()
            finally:
                stop_workers([worker])
            if options.profile is not None and (options.profile / "worker.folded").exists():
                profile = top_functions(options.profile / "worker.folded")
                live = options.profile / "worker-live.folded"
                if live.exists():
                    profile["live"] = top_functions(live)
    finally:
        run.close()
    if "takeover" in options.contenders:
        with phase(run, "takeover"):
            takeover = run_takeover(run.base, options, out)
    run.durations["total"] = round(time.monotonic() - wall, 1)
    figures = build_figures(run, results, latency, memory, profile, {**fresh, **takeover})
    print_table(run, results, latency, memory, figures, profile)
    out.write(json.dumps(figures, separators=(",", ":")) + "\n")
    out.flush()
    return figures


def write_history_jsonl(settings: Settings, options: BenchOptions, path: Path) -> int:
    """The simulator's history as replay input, wrapped form (``{"type", "event"}``)."""
    events = _history(settings, options)
    count = 0
    with path.open("wb") as handle:
        for kind, event in events:
            handle.write(orjson.dumps({"type": kind, "event": event}) + b"\n")
            count += 1
    return count


def run_backfill_bench(
    settings: Settings, options: BenchOptions, out: TextIO | None = None
) -> dict[str, Any]:
    """A backfill end to end: ``streamproc replay`` of N events into a running worker.

    The worker is started and ready first; the clock starts when the replay process starts.
    Replay time is the replay process's run time; catch-up is from its end until the worker
    has committed N events (then ``streamproc_events_total`` is read once).
    """
    out = out if out is not None else sys.stdout
    run = BenchRun(settings, options, out)
    wall = time.monotonic()
    worker: WorkerHandle | None = None
    try:
        run.start()
        source = run.workdir / "history.jsonl"
        with phase(run, "write_file"):
            write_history_jsonl(run.settings, options, source)
        size = source.stat().st_size
        run.log(f"backfill: {options.events:,} events, {size / MIB:.0f} MiB of JSON Lines")
        settings_w = run.worker_settings("backfill")
        settings_w.data_dir.mkdir(parents=True, exist_ok=True)
        worker = WorkerHandle(settings_w, run.workdir / "backfill-worker.log").start()
        wait_ready([worker], options.start_timeout)
        started = time.monotonic()
        argv = [sys.executable, "-m", "streamproc", "replay", str(source)]
        run.check_code("backfill")
        cpu = CpuWatch([os.getpid(), run.broker.pid, worker.pid])
        replay_proc = subprocess.run(argv, env=child_env(run.settings), check=False)
        replayed = time.monotonic()
        if replay_proc.returncode != 0:
            raise BenchError(f"replay exited with {replay_proc.returncode}")
        # Progress from the group's commits (no /metrics polling: a scrape is costly), then
        # one scrape for the count.
        done, _ = asyncio.run(
            follow_commits(
                settings_w, set(run.input_topics), options.events, replayed, options.catch_up
            )
        )
        foreign = cpu.foreign_cores()  # the replay process is ours: our waited-for child
        count = events_total(worker.metrics())
        memory = worker.memory()
    finally:
        if worker is not None:
            worker.stop()
        run.close()
    total = done - started
    figures = {
        "backfill_events": options.events,
        "backfill_counted": int(count),
        "replay_seconds": round(replayed - started, 1),
        "replay_events_per_s": round(options.events / (replayed - started), 1),
        "catch_up_seconds": round(done - replayed, 1),
        "end_to_end_seconds": round(total, 1),
        "end_to_end_events_per_s": round(count / total, 1),
        "reached": count >= options.events,
        "file_mib": round(size / MIB, 1),
        "rss_mb": round(memory.get("VmHWM", 0.0), 1),
        "foreign_cpu_cores": round(foreign, 2),
        "total_seconds": round(time.monotonic() - wall, 1),
        "code": {**run.version, "changed_before": run.code_changed},
    }
    out.write(
        f"backfill of {options.events:,} events: replay {figures['replay_seconds']}s "
        f"({figures['replay_events_per_s']:,.0f}/s), worker caught up "
        f"{figures['catch_up_seconds']}s later: {figures['end_to_end_seconds']}s end to end "
        f"({figures['end_to_end_events_per_s']:,.0f}/s); worker peak RSS {figures['rss_mb']} MiB\n"
    )
    out.write(json.dumps(figures, separators=(",", ":")) + "\n")
    out.flush()
    return figures
