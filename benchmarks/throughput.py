"""Throughput: each contender reads the whole history from the start of the topics.

The baselines (``benchmarks.contenders``) time themselves through a status file; the KPI
workers are timed from all ready until the group's committed offsets reach the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.metrics import events_total
from benchmarks.options import BenchError, BenchOptions
from benchmarks.processes import CpuWatch, WorkerHandle, stop_process, stop_workers
from benchmarks.profiling import start_profiler, stop_profiler
from benchmarks.session import BenchRun
from streamproc.config import Settings
from streamproc.tools.net import free_port
from streamproc.tools.processes import spawn_child

__all__ = [
    "CONTENDER_MODULES",
    "Throughput",
    "catch_up",
    "follow_commits",
    "measure_contender",
    "measure_kpi",
    "wait_ready",
]

CONTENDER_MODULES = {"raw": "raw_consumer", "plain": "plain_faust", "naive": "naive_faust"}
"""The baselines: contender name -> module of ``benchmarks.contenders``."""

_CHECKOUT = Path(__file__).resolve().parents[1]
"""The directory holding this ``benchmarks`` package: the contenders are imported from it."""


@dataclass
class Throughput:
    """One contender's run: events counted while measuring, over how long, and whether the
    whole history was read (``reached``) or the time bound cut it short."""

    name: str
    events: int
    seconds: float
    reached: bool
    startup_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def wait_ready(workers: Sequence[WorkerHandle], timeout: float) -> tuple[float, float]:
    """Poll ``/readyz`` of every worker: (the monotonic time the first answered 200, the
    time all answered 200 together with the partitions split between them). All ready is
    not enough: a worker ready alone before the other joined is about to rebalance."""
    deadline = time.monotonic() + timeout
    first: float | None = None
    while time.monotonic() < deadline:
        owned = [w.readiness() for w in workers]
        if first is None and any(p is not None for p in owned):
            first = time.monotonic()
        if all(p is not None for p in owned) and split_between(
            owned, workers[0].settings.partitions
        ):
            settled = time.monotonic()
            return (first or settled), settled
        time.sleep(0.1)
    raise BenchError(f"workers not ready within {timeout:g}s; logs: {workers[0].log_path.parent}")


def split_between(owned: Sequence[list[int] | None], partitions: int) -> bool:
    """True when the lists are disjoint and cover every partition."""
    flat = [p for parts in owned for p in parts or ()]
    return sorted(flat) == list(range(partitions))


def _sample_count(workers: Sequence[WorkerHandle]) -> tuple[float, float]:
    """(monotonic time of the sample, events counted by all workers), from /metrics."""
    t0 = time.monotonic()
    total = sum(events_total(w.metrics()) for w in workers)
    return (t0 + time.monotonic()) / 2, total


async def _committed_total(admin: Any, group: str, partitions: list[Any]) -> int:
    """Input messages the group has committed: its offsets summed (the topics start at 0).

    The partitions are named: tansu drops the connection on a fetch of "all offsets".
    """
    offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
    return sum(m.offset for m in offsets.values() if m.offset > 0)


async def follow_commits(
    settings: Settings, topics: set[str], target: int, ready_at: float, bound: float
) -> tuple[float, int]:
    """Poll the group's committed offsets every 0.1 s until they add up to ``target`` or the
    time bound passes: (monotonic time, committed total)."""
    from aiokafka import TopicPartition  # type: ignore[import-untyped]

    from streamproc.kafka.clients import admin_client

    partitions = [TopicPartition(t, p) for t in sorted(topics) for p in range(settings.partitions)]
    admin = admin_client(settings, client_id="streamproc-bench-progress")
    await admin.start()
    try:
        while True:
            await asyncio.sleep(0.1)
            done = await _committed_total(admin, settings.app_id, partitions)
            now = time.monotonic()
            if done >= target or now - ready_at >= bound:
                return now, done
    finally:
        await admin.close()


def measure_kpi(
    run: BenchRun,
    name: str,
    count: int,
    profile: Path | None = None,
) -> tuple[Throughput, list[WorkerHandle]]:
    """Throughput of ``count`` KPI workers, from all ready until the history is counted.

    Events/s = (N - events counted at ready) / (end - ready). Ready: every worker's /readyz
    answers 200 and their partitions split the topics (polled every 0.1 s); if more than
    half the history was counted by then (a small one), ready is the first worker's ready
    and the count there 0. The count at ready is ``streamproc_events_total``
    summed over outcomes, one /metrics scrape. End: the moment the group's committed offsets
    add up to N, polled every 0.1 s from the broker; a worker commits every 0.5 s, so the end
    is late by at most ~0.6 s (the figure errs low). /metrics is not polled during the run:
    a scrape costs the worker's event loop ~90 ms at 2,000 leads and ~1 s at 100,000 (it
    renders every KPI series), which would slow what is measured. At the end one scrape
    checks that ``streamproc_events_total`` has reached N. On the time bound, the count is
    ``streamproc_events_total`` scraped then. The workers are returned still running.
    """
    opts = run.options
    run.check_code(name)
    settings = run.worker_settings(name)
    workers = []
    for i in range(count):
        own = settings.model_copy(
            update={"web_port": free_port(), "data_dir": settings.data_dir / f"w{i}"}
        )
        own.data_dir.mkdir(parents=True, exist_ok=True)
        workers.append(WorkerHandle(own, run.workdir / f"{name}-w{i}.log").start())
    spawned = time.monotonic()
    topics = set(run.input_topics)
    try:
        first_ready, ready_at = wait_ready(workers, opts.start_timeout)
        _, ready_count = _sample_count(workers)
        if ready_count > opts.events / 2:
            # A small history, mostly read by the first worker before the group settled
            # (the tiny bench's two workers once had it all: 0 events/s). Measured from
            # the first worker ready instead, the rebalance included.
            ready_at, ready_count = first_ready, 0
        cpu = CpuWatch([os.getpid(), run.broker.pid, *(w.pid for w in workers)])
        spies = [
            start_profiler(w.pid, profile, f"{name}-w{i}" if count > 1 else "worker")
            for i, w in enumerate(workers)
            if profile is not None
        ]
        end, committed = asyncio.run(
            follow_commits(settings, topics, opts.events, ready_at, opts.time_bound)
        )
        foreign = cpu.foreign_cores()
        worker_cpu = cpu.cpu_seconds([w.pid for w in workers])
        broker_cpu = cpu.cpu_seconds([run.broker.pid])
        for spy in spies:
            if spy is not None:
                stop_profiler(spy)
        reached = committed >= opts.events
        sampled, counted = _sample_count(workers)
        if not reached:
            end = sampled
        elif counted < opts.events:
            raise BenchError(
                f"{name}: offsets committed for {committed} events but "
                f"streamproc_events_total is {counted:.0f}"
            )
        end_count = opts.events if reached else counted
    except BaseException:
        stop_workers(workers)
        raise
    result = Throughput(
        name,
        int(end_count - ready_count),
        max(1e-9, end - ready_at),
        reached,
        ready_at - spawned,
        {
            "counted_before_ready": int(ready_count),
            "counted_at_end": int(counted),
            "foreign_cores": foreign,
            "worker_cpu_us_per_event": _per_event(worker_cpu, end_count - ready_count),
            "broker_cpu_us_per_event": _per_event(broker_cpu, end_count - ready_count),
        },
    )
    return result, workers


def _per_event(cpu_seconds: float, events: float) -> float | None:
    return round(cpu_seconds / events * 1e6, 1) if events > 0 else None


def catch_up(run: BenchRun, worker: WorkerHandle) -> bool:
    """Let a worker finish the history (unmeasured); True once its commits reach N."""
    settings = worker.settings
    started = time.monotonic()
    _, committed = asyncio.run(
        follow_commits(
            settings, set(run.input_topics), run.options.events, started, run.options.catch_up
        )
    )
    return committed >= run.options.events


def _contender_argv(module: str) -> list[str]:
    """``python -m benchmarks.contenders.MODULE``; ``-P``: the package comes from PYTHONPATH
    (``_contender_env``), not from whatever the working directory holds."""
    return [sys.executable, "-P", "-m", f"benchmarks.contenders.{module}"]


def _contender_env() -> dict[str, str]:
    """The environment, with this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_CHECKOUT), env.get("PYTHONPATH")]))
    return env


def measure_contender(run: BenchRun, name: str, module: str) -> Throughput:
    """A contender process of ``benchmarks.contenders``, timed by itself: from its first
    event to the N-th (or its count when the time bound is reached). The process is stopped
    after."""
    opts = run.options
    status = run.workdir / f"{name}.status.json"
    argv = [
        *_contender_argv(module),
        "--broker",
        run.broker.bootstrap_servers,
        "--topics",
        ",".join(run.input_topics),
        "--partitions",
        str(run.settings.partitions),
        "--app-id",
        f"{run.settings.app_id}-{name}",
        "--expect",
        str(opts.events),
        "--status",
        str(status),
        "--datadir",
        str(run.workdir / "data" / name),
    ]
    log_path = run.workdir / f"{name}.log"
    (run.workdir / "data").mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = spawn_child(argv, log, _contender_env())
        spawned = time.time()
        cpu = CpuWatch([os.getpid(), run.broker.pid, proc.pid])
        try:
            data = _follow_status(proc, status, opts, log_path)
            extra = {"foreign_cores": cpu.foreign_cores()}  # over its whole run, start included
        finally:
            stop_process(proc, timeout=5.0)
    first, done = data["first_at"], data["done_at"]
    if done is not None:
        return Throughput(name, opts.events, done - first, True, first - spawned, extra)
    # Bounded: the rate of what was counted between the first event and the last status.
    count, seconds = data["count"], data["last_at"] - first
    return Throughput(name, count, seconds, False, first - spawned, extra)


def _follow_status(
    proc: subprocess.Popen[bytes], status: Path, opts: BenchOptions, log_path: Path
) -> dict[str, Any]:
    deadline = time.time() + opts.start_timeout
    while True:
        time.sleep(0.1)
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"{log_path.stem} exited with {proc.returncode}:\n{tail}")
        try:
            data: dict[str, Any] = json.loads(status.read_text())
        except (OSError, ValueError):
            data = {}
        first = data.get("first_at")
        if first is None:
            if time.time() > deadline:
                raise BenchError(f"{log_path.stem} read nothing within {opts.start_timeout:g}s")
            continue
        if data.get("done_at") is not None or time.time() - first >= opts.time_bound:
            # One more read: the final status may be a fraction of a second newer.
            time.sleep(0.3 if data.get("done_at") is None else 0)
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(status.read_text())
            return data
