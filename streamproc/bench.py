"""``streamproc bench``: throughput, latency, alert delay and memory of the worker, measured.

One run starts an embedded broker, pre-produces a realistic history from the simulator, and
lets each contender read it from the start of the topics, one after the other, on the same
data: the raw aiokafka loop (the stack's limit), a Faust agent doing nothing (Faust's
per-event ceiling), a naive Faust app (a table ``+= 1`` per event), then the KPI topology
with two workers and with one. The one-worker run then carries a steady load for the
latency and alert measurements, and its peak RSS is read from ``/proc``.

How each figure is taken is written next to the code that takes it and in
``docs/performance.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import orjson

from streamproc.config import Settings, child_env
from streamproc.exceptions import StreamprocError
from streamproc.kafka.topics import create_topics, topic_names
from streamproc.tools.broker import EmbeddedBroker
from streamproc.tools.net import free_port
from streamproc.tools.processes import spawn_child
from streamproc.tools.progress import Progress
from streamproc.tools.sales_team import SalesTeam, history, rfc3339

__all__ = [
    "BenchError",
    "BenchOptions",
    "Throughput",
    "run_backfill_bench",
    "run_bench",
]

DAY = 86400.0
MIB = 1024 * 1024
MARKER_REP = "bench-marker"
SLA_SOURCE = "bench-sla"
_EVENTS_TOTAL = re.compile(rb"^streamproc_events_total\{[^}]*\} (\S+)$", re.M)
_DELAY_BUCKET = re.compile(rb'^streamproc_event_delay_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
_LEADS_CREATED = re.compile(rb"^sales_leads_created\{([^}]*)\} (\S+)$", re.M)
CONTENDERS = ("raw", "plain", "naive", "kpi2", "kpi1")
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
    # ``rss_mb`` is in MiB (as printed); 300 MB are 286.1 MiB.
    "RSS <= 300 MB": lambda r: r["rss_mb"] * MIB <= 300e6,
}
"""The issue's goals, checked on the JSON figures (a missing figure: not checked)."""


class BenchError(StreamprocError):
    """A contender could not run (did not start, crashed): the message says which and why."""


@dataclass(frozen=True)
class BenchOptions:
    """What one bench run does; ``quick()`` is the ``--quick`` preset."""

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
    alert_sla: float = 2.0
    """The SLA (seconds) of the probe leads' source, set as an override for that source."""
    alert_probes: int = 10
    alert_wait: float = 10.0
    """Seconds to wait for the last probe's alert after its due time."""
    contenders: tuple[str, ...] = CONTENDERS
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
            "alert_probes": 3,
            "alert_wait": 3.0,
            "quick": True,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def lead_count(self) -> int:
        return self.leads if self.leads is not None else max(1, self.events // 10)


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


# --- processes -------------------------------------------------------------------------------


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 8.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class CpuWatch:
    """CPU used on the machine by processes other than ours, over an interval, in cores.

    From /proc: the machine's busy time minus the CPU time of our processes (this one, the
    broker, the workers or the contender). Other engineers' tests on a shared 2-core
    machine show up here; a figure measured with ~1 foreign core is not comparable with one
    measured on an idle machine.
    """

    def __init__(self, pids: Sequence[int | None]) -> None:
        self.pids = [p for p in pids if p is not None]
        self._start = (time.monotonic(), _busy_jiffies(), self._ours())

    def _ours(self) -> int:
        return sum(_pid_jiffies(p) for p in self.pids)

    def foreign_cores(self) -> float:
        t0, busy0, ours0 = self._start
        elapsed = time.monotonic() - t0
        if elapsed <= 0:
            return 0.0
        foreign = (_busy_jiffies() - busy0) - (self._ours() - ours0)
        return max(0.0, foreign / _CLK_TCK / elapsed)


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_jiffies() -> int:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def _pid_jiffies(pid: int) -> int:
    """utime + stime of a process (all its threads), plus its waited-for children's."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return sum(int(x) for x in rest[11:15])


def code_version() -> dict[str, Any]:
    """The worker code a run measures: git commit, whether the package differs from it, and
    a hash of the package's sources as they are now (other people edit them meanwhile)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    version: dict[str, Any] = {"sources_sha256": digest.hexdigest()[:12]}
    git = shutil.which("git")
    if git is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            head = subprocess.run(
                [git, "rev-parse", "--short", "HEAD"],
                cwd=package,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            dirty = subprocess.run(
                [git, "status", "--porcelain", "--", "."],
                cwd=package,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            version["commit"] = head.stdout.strip()
            version["dirty"] = bool(dirty.stdout.strip())
    return version


def stop_workers(workers: Sequence[WorkerHandle], timeout: float = 5.0) -> None:
    """SIGTERM all at once, then wait (SIGKILL after ``timeout``): the bench is done with them."""
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        w.stop(timeout)


def proc_memory(pid: int) -> dict[str, float]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` of a process, in MiB, from /proc."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            out[name] = int(value.split()[0]) * 1024 / MIB
    return out


class WorkerHandle:
    """One ``streamproc worker`` subprocess, configured through ``STREAMPROC_*`` variables."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerHandle:
        self._log = self.log_path.open("ab")
        argv = [sys.executable, "-m", "streamproc", "worker"]
        self.proc = spawn_child(argv, self._log, child_env(self.settings))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.settings.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"worker exited with {self.proc.returncode}; log tail:\n{tail}")

    def readiness(self) -> list[int] | None:
        """The input partitions the worker owns once ready, else None."""
        self.check_alive()
        status, body = self.get("/readyz", timeout=2.0)
        return orjson.loads(body).get("partitions", []) if status == 200 else None

    def metrics(self) -> bytes:
        status, body = self.get("/metrics")
        if status != 200:
            self.check_alive()
            raise BenchError(f"/metrics answered {status}")
        return body

    def memory(self) -> dict[str, float]:
        return proc_memory(self.pid) if self.proc is not None else {}

    def stop(self, timeout: float = 8.0) -> None:
        _stop_process(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def events_total(metrics: bytes) -> float:
    """``streamproc_events_total`` summed over topics and outcomes."""
    return sum(float(m.group(1)) for m in _EVENTS_TOTAL.finditer(metrics))


def delay_buckets(metrics: bytes) -> dict[float, float]:
    """The cumulative buckets of ``streamproc_event_delay_seconds``: upper bound -> count."""
    return {float(m.group(1)): float(m.group(2)) for m in _DELAY_BUCKET.finditer(metrics)}


def marker_count(metrics: bytes, rep: str = MARKER_REP) -> float:
    """The 1h ``sales_leads_created`` of the marker rep (0 before its first marker)."""
    wanted = f'rep="{rep}"'.encode()
    for m in _LEADS_CREATED.finditer(metrics):
        labels = m.group(1)
        if wanted in labels and b'window="1h"' in labels:
            return float(m.group(2))
    return 0.0


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile`` over the increase between two bucket snapshots."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), like the KPIs."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# --- the run ---------------------------------------------------------------------------------


class _Run:
    """State of one bench run: the broker, the base settings, the work directory."""

    def __init__(self, settings: Settings, options: BenchOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.tag = f"{os.getpid():x}{int(time.time()) % 100000:x}"
        if options.workdir is not None:
            options.workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = options.workdir
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="streamproc-bench-"))
        self.broker = EmbeddedBroker(free_port(), log_path=self.workdir / "broker.log")
        self.base = settings
        self.settings = settings
        self.durations: dict[str, float] = {}
        self.version = code_version()
        self.code_changed: list[str] = []

    def check_code(self, name: str) -> None:
        """Note a contender started on other sources than the run began with."""
        if code_version()["sources_sha256"] != self.version["sources_sha256"]:
            self.code_changed.append(name)
            self.log(f"  warning: streamproc's sources changed before {name} started")

    def log(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def start(self) -> None:
        self.broker.start()
        self.settings = self.base.model_copy(
            update={
                "broker_url": self.broker.url,
                "topic_prefix": f"bench-{self.tag}.",
                "app_id": f"bench-{self.tag}",
                "redis_url": None,  # hermetic: the bench measures the worker, not a Redis
                "data_dir": self.workdir / "data",
                "sla_source_overrides": {
                    **self.base.sla_source_overrides,
                    SLA_SOURCE: self.options.alert_sla,
                },
            }
        )
        asyncio.run(create_topics(self.settings))

    def close(self) -> None:
        self.broker.stop()
        if self.options.workdir is None and not self.options.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def worker_settings(self, app: str) -> Settings:
        return self.settings.model_copy(
            update={
                "app_id": f"{self.settings.app_id}-{app}",
                "web_port": free_port(),
                "data_dir": self.workdir / "data" / app,
            }
        )

    @property
    def input_topics(self) -> list[str]:
        return list(topic_names(self.settings).inputs.values())


async def _produce_history(settings: Settings, options: BenchOptions, stream: TextIO) -> int:
    from streamproc.kafka.producer import EventProducer

    events = history(
        settings,
        options.events,
        options.lead_count,
        options.span_days * DAY,
        reps=options.reps,
        seed=options.seed,
    )
    bar = Progress(options.events, stream=stream, label="produce")
    async with EventProducer(settings, linger_ms=20, client_id="streamproc-bench") as producer:
        for i, (kind, event) in enumerate(events, 1):
            await producer.send(kind, event)
            if i % 2000 == 0:
                bar.update(2000)
                await asyncio.sleep(0)
        await producer.flush()
        await asyncio.sleep(0.05)
        failed = producer.failed
    bar.close()
    if failed:
        raise BenchError(f"{failed} events of the history were not delivered")
    return options.events


def _wait_ready(workers: Sequence[WorkerHandle], timeout: float) -> tuple[float, float]:
    """Poll ``/readyz`` of every worker: (the monotonic time the first answered 200, the
    time all answered 200 together with the partitions split between them). All ready is
    not enough: a worker ready alone before the other joined is about to rebalance."""
    deadline = time.monotonic() + timeout
    first: float | None = None
    while time.monotonic() < deadline:
        owned = [w.readiness() for w in workers]
        if first is None and any(p is not None for p in owned):
            first = time.monotonic()
        if all(p is not None for p in owned) and _split(owned, workers[0].settings.partitions):
            settled = time.monotonic()
            return (first or settled), settled
        time.sleep(0.1)
    raise BenchError(f"workers not ready within {timeout:g}s; logs: {workers[0].log_path.parent}")


def _split(owned: Sequence[list[int] | None], partitions: int) -> bool:
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


async def _follow_commits(
    settings: Settings, topics: set[str], target: int, ready_at: float, bound: float
) -> tuple[float, int]:
    """Poll the group's committed offsets every 0.1 s until they add up to ``target`` or the
    time bound passes: (monotonic time, committed total)."""
    from aiokafka import TopicPartition  # type: ignore[import-untyped]
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    partitions = [TopicPartition(t, p) for t in sorted(topics) for p in range(settings.partitions)]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.broker_hosts, client_id="streamproc-bench-progress"
    )
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


def _measure_kpi(
    run: _Run,
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
        first_ready, ready_at = _wait_ready(workers, opts.start_timeout)
        _, ready_count = _sample_count(workers)
        if ready_count > opts.events / 2:
            # A small history, mostly read by the first worker before the group settled
            # (the tiny bench's two workers once had it all: 0 events/s). Measured from
            # the first worker ready instead, the rebalance included.
            ready_at, ready_count = first_ready, 0
        cpu = CpuWatch([os.getpid(), run.broker.pid, *(w.pid for w in workers)])
        spy = _start_profiler(workers[0].pid, profile) if profile is not None else None
        end, committed = asyncio.run(
            _follow_commits(settings, topics, opts.events, ready_at, opts.time_bound)
        )
        foreign = cpu.foreign_cores()
        if spy is not None:
            _stop_profiler(spy)
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
        },
    )
    return result, workers


def _catch_up(run: _Run, worker: WorkerHandle) -> bool:
    """Let a worker finish the history (unmeasured); True once its commits reach N."""
    settings = worker.settings
    started = time.monotonic()
    _, committed = asyncio.run(
        _follow_commits(
            settings, set(run.input_topics), run.options.events, started, run.options.catch_up
        )
    )
    return committed >= run.options.events


def _contender_script(name: str) -> Path:
    """A contender module of ``benchmarks/``: next to the package (a source checkout, an
    editable install), else under the working directory."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        here = root / "benchmarks" / name
        if here.exists():
            return here
    raise BenchError(f"benchmarks/{name} not found: run the bench from a source checkout")


def _measure_contender(run: _Run, name: str, script: str) -> Throughput:
    """A contender process from ``benchmarks/``, timed by itself: from its first event to the
    N-th (or its count when the time bound is reached). The process is stopped after."""
    opts = run.options
    status = run.workdir / f"{name}.status.json"
    argv = [
        sys.executable,
        str(_contender_script(script)),
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
        proc = spawn_child(argv, log, dict(os.environ))
        spawned = time.time()
        cpu = CpuWatch([os.getpid(), run.broker.pid, proc.pid])
        try:
            data = _follow_status(proc, status, opts, log_path)
            extra = {"foreign_cores": cpu.foreign_cores()}  # over its whole run, start included
        finally:
            _stop_process(proc, timeout=5.0)
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


# --- profiling -------------------------------------------------------------------------------


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _start_profiler(
    pid: int, directory: Path, name: str = "worker"
) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` at 100 Hz without pausing it, into ``directory/NAME.folded``."""
    binary = _py_spy()
    if binary is None:
        sys.stderr.write("bench: py-spy not found (pip install py-spy): no profile\n")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    argv = [binary, "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
    argv += ["--format", "raw", "--output", str(directory / f"{name}.folded")]
    log = (directory / "py-spy.log").open("ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


_FRAME_LINE = re.compile(r":\d+\)$")


_ENTRY_FRAMES = ("(streamproc/cli.py)", "(streamproc/worker.py)", "(streamproc/__main__.py)")


def top_functions(folded: Path, limit: int = 20) -> dict[str, Any]:
    """Where a py-spy ``raw`` profile spends its samples, as shares of all samples.

    ``self``: the function on top of the stack; ``total``: anywhere on the stack (its
    callees included); ``ours``: ``total`` restricted to streamproc's own functions, the
    entry point (cli, worker) left out since it is on every stack.
    """
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [_FRAME_LINE.sub(")", f) for f in stack.split(";")]
        samples += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    if not samples:
        return {"samples": 0, "self": [], "total": [], "ours": []}
    ours = [
        (f, c)
        for f, c in total_counts.most_common()
        if "(streamproc/" in f and not f.endswith(_ENTRY_FRAMES)
    ]
    return {
        "samples": samples,
        "self": [(f, c / samples) for f, c in self_counts.most_common(limit)],
        "total": [(f, c / samples) for f, c in total_counts.most_common(limit * 3)],
        "ours": [(f, c / samples) for f, c in ours[:limit]],
    }


# --- latency and alerts ---------------------------------------------------------------------


@dataclass
class Latency:
    samples: list[float]
    """Per marker: changelog record timestamp minus the marker's own record timestamp."""
    histogram_p50: float
    histogram_p99: float
    sent: int
    rate: float
    markers: int
    lost: int
    confirmations: int
    """/metrics scrapes that showed every marker already written to the changelog."""
    violations: int
    """Scrapes that did not (the changelog would then not bound the effect on /metrics)."""
    shortfalls: list[tuple[int, float, float]] = field(default_factory=list)
    """Per scrape that did not: (markers written before it, markers shown, its seconds)."""
    alert_samples: list[float] = field(default_factory=list)
    alert_probes: int = 0
    foreign_cores: float = 0.0


def _marker_event(tag: str, k: int, now: float, rep: str, source: str) -> dict[str, Any]:
    return {
        "event_id": f"{rep}-{tag}-{k}",
        "occurred_at": rfc3339(now),
        "lead_id": f"{rep}-{tag}-{k}",
        "rep_id": rep,
        "source": source,
    }


def _team_for(settings: Settings, rate: float, reps: int, seed: int, lead: float) -> SalesTeam:
    """A simulated team that emits ``rate`` events/s, starting ``lead`` seconds from now.

    ``SalesTeam.for_rate(r)`` runs low for its first hour at high rates (its pre-fill is
    capped; measured here: 1,000 asked, ~550/s emitted), and the shortfall is not linear in
    ``r``. So twins are drawn with the rate asked adjusted (a secant on log-log) until one
    emits ``rate`` (+-3 %) over its first 30 s of event time; the team returned is drawn
    with that rate.
    """
    window = 30.0
    # First guess from what was measured (1,000 -> ~3,100 asked; ~1 at 100/s and below).
    asked, points = rate * max(1.0, (rate / 100.0) ** 0.49), []
    for _ in range(6):
        start = time.time()
        twin = SalesTeam.for_rate(settings, asked, reps, seed, start=start)
        observed = len(twin.events_between(start, start + window)) / window
        if observed <= 0 or abs(observed - rate) <= 0.03 * rate:
            break
        points.append((math.log(asked), math.log(observed)))
        if len(points) >= 2 and points[-1][0] != points[-2][0]:
            (x0, y0), (x1, y1) = points[-2], points[-1]
            slope = max(0.1, (y1 - y0) / (x1 - x0))
        else:
            slope = 0.5
        asked = math.exp(points[-1][0] + (math.log(rate) - points[-1][1]) / slope)
    return SalesTeam.for_rate(settings, asked, reps, seed, start=time.time() + lead)


async def _steady_load(
    settings: Settings,
    producer: Any,
    opts: BenchOptions,
    sent: list[int],
    flowing: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """A simulated team at ``latency_rate`` events/s, each event sent as its time passes;
    ``sent[0]`` counts them, ``flowing`` is set once the team is drawn."""
    # The team starts a little ahead of now: drawing it takes ~1.5 s.
    team = await asyncio.to_thread(
        _team_for, settings, opts.latency_rate, opts.reps, opts.seed + 1, 3.0
    )
    await asyncio.sleep(max(0.0, team.start - time.time()))
    flowing.set()
    cursor = team.start
    while not stop.is_set():
        now = time.time()
        for kind, event in team.events_between(cursor, now):
            await producer.send(kind, event)
            sent[0] += 1
        cursor = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)


async def _assigned_consumer(settings: Settings, topic: str, client_id: str) -> Any:
    """A consumer on every partition of ``topic``, positioned at its end now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_hosts,
        group_id=None,
        enable_auto_commit=False,
        client_id=client_id,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolve "end" now, before anything is sent
    return consumer


async def _follow_changelog(
    consumer: Any, prefix: bytes, seen: dict[bytes, float], stop: asyncio.Event
) -> None:
    """Record the first changelog write of every marker lead: key -> record timestamp."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=100)
        for records in batches.values():
            for record in records:
                key = record.key
                if key is not None and key.startswith(prefix) and key not in seen:
                    seen[key] = record.timestamp / 1000


async def _send_markers(
    producer: Any, settings: Settings, opts: BenchOptions, tag: str, end: float
) -> dict[bytes, float]:
    """A marker lead-created every ``marker_interval``: key -> its record timestamp."""
    topic = settings.topic("lead-created")
    deliveries: dict[bytes, asyncio.Future[Any]] = {}
    k = 0
    next_at = time.time()
    while next_at < end:
        await asyncio.sleep(max(0.0, next_at - time.time()))
        next_at += opts.marker_interval
        k += 1
        event = _marker_event(tag, k, time.time(), MARKER_REP, MARKER_REP)
        key = event["lead_id"].encode()
        deliveries[key] = await producer.send_raw(topic, key, orjson.dumps(event))
    return {key: (await fut).timestamp / 1000 for key, fut in deliveries.items()}


async def _confirm_scrapes(
    url: str,
    base: float,
    seen: dict[bytes, float],
    interval: float,
    stop: asyncio.Event,
    shortfalls: list[tuple[int, float, float]],
) -> int:
    """Scrape /metrics every ``interval`` (a Prometheus' load): each scrape must show every
    marker whose changelog write came before the scrape started (``base``: the count
    shown before the first marker). Returns how many did; each that did not adds
    (markers written, markers shown, seconds the scrape took) to ``shortfalls``."""
    import aiohttp

    confirmed = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            started = time.time()
            written = sum(1 for ts in list(seen.values()) if ts < started - 0.002)
            async with session.get(url) as resp:
                shown = marker_count(await resp.read()) - base
            if shown >= written:
                confirmed += 1
            else:
                shortfalls.append((written, shown, round(time.time() - started, 3)))
    return confirmed


async def _scraped_markers(url: str) -> float:
    """The marker count /metrics shows now. Taken while the first markers were already on
    their way, a scrape that lasts (it is computed in slices) counted some of them in the
    base: the later checks then came up short by as many (3 of 600 in one run)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return marker_count(await resp.read())


async def _alert_probes(
    producer: Any, settings: Settings, opts: BenchOptions, tag: str, end: float
) -> dict[str, float]:
    """Leads of the short-SLA source, never contacted: lead id -> when their SLA is due."""
    topic = settings.topic("lead-created")
    due: dict[str, float] = {}
    gap = max(0.2, (end - time.time() - opts.alert_sla) / max(1, opts.alert_probes))
    for i in range(opts.alert_probes):
        now = time.time()
        event = _marker_event(tag, i, now, SLA_SOURCE, SLA_SOURCE)
        # The SLA runs from occurred_at, written with millisecond precision.
        due[event["lead_id"]] = int(now * 1000) / 1000 + opts.alert_sla
        await producer.send_raw(topic, event["lead_id"], orjson.dumps(event))
        await asyncio.sleep(gap)
    return due


async def _follow_alerts(
    consumer: Any, prefix: str, arrived: dict[str, float], stop: asyncio.Event
) -> None:
    """Record the level-1 breach alert of every probe lead: lead id -> record timestamp."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=100)
        for records in batches.values():
            for record in records:
                try:
                    alert = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(alert, dict):
                    continue
                lead = alert.get("lead_id")
                if (
                    isinstance(lead, str)
                    and lead.startswith(prefix)
                    and lead not in arrived
                    and alert.get("kind") == "response_sla_breached"
                    and alert.get("level", 1) == 1
                ):
                    arrived[lead] = record.timestamp / 1000


async def _latency_run(
    worker: WorkerHandle, opts: BenchOptions, tag: str, broker_pid: int | None = None
) -> Latency:
    """Steady load with markers and alert probes against a caught-up worker.

    Latency of a marker: from its record timestamp (set by our producer when it is sent,
    the same clock the worker's delay histogram starts from) to the timestamp of the
    worker's first changelog write of the marker lead. The worker writes a batch's changed
    leads right after the engine has applied the batch to the in-memory aggregates that
    /metrics renders, so that write bounds the effect from above (within a millisecond or
    so for a small batch); a scrape every ``scrape_interval`` checks that /metrics already
    shows every marker the changelog has. Polling /metrics per marker would measure the
    scrapes instead: one costs the worker's loop ~90 ms at 2,000 leads, ~1 s at 100,000.
    """
    from streamproc.kafka.producer import EventProducer

    settings = worker.settings
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    prefix = f"{MARKER_REP}-{tag}-".encode()
    changelog = await _assigned_consumer(
        settings, f"{settings.app_id}-leads-changelog", "bench-changelog"
    )
    alerts = await _assigned_consumer(settings, settings.topic("alerts"), "bench-alerts")
    seen: dict[bytes, float] = {}
    shortfalls: list[tuple[int, float, float]] = []
    arrived: dict[str, float] = {}
    try:
        async with EventProducer(settings, linger_ms=5, client_id="bench-latency") as producer:
            stop_load, stop_follow, flowing = asyncio.Event(), asyncio.Event(), asyncio.Event()
            sent = [0]
            load = asyncio.create_task(
                _steady_load(settings, producer, opts, sent, flowing, stop_load)
            )
            follow = asyncio.create_task(_follow_changelog(changelog, prefix, seen, stop_follow))
            stop_alerts = asyncio.Event()
            follow_alerts = asyncio.create_task(
                _follow_alerts(alerts, f"{SLA_SOURCE}-{tag}-", arrived, stop_alerts)
            )
            await flowing.wait()
            await asyncio.sleep(1.0)  # the load is flowing and the worker has taken it up
            buckets_before = await asyncio.to_thread(lambda: delay_buckets(worker.metrics()))
            started, sent_before = time.time(), sent[0]
            cpu = CpuWatch([os.getpid(), worker.pid, broker_pid])
            end = started + opts.latency_seconds
            base = await _scraped_markers(url)  # before the first marker is sent
            scrapes = asyncio.create_task(
                _confirm_scrapes(url, base, seen, opts.scrape_interval, stop_follow, shortfalls)
            )
            probes = asyncio.create_task(_alert_probes(producer, settings, opts, tag, end))
            sent_at = await _send_markers(producer, settings, opts, tag, end)
            stop_load.set()
            await load
            elapsed, load_sent = time.time() - started, sent[0] - sent_before
            foreign = cpu.foreign_cores()
            buckets_after = await asyncio.to_thread(lambda: delay_buckets(worker.metrics()))
            grace = time.time() + 5.0
            while len(seen) < len(sent_at):
                if time.time() > grace:
                    break
                await asyncio.sleep(0.05)
            stop_follow.set()
            await follow
            confirmed = await scrapes
            due = await probes
            until = max(due.values(), default=time.time()) + opts.alert_wait
            while len(arrived) < len(due):
                if time.time() > until:
                    break
                await asyncio.sleep(0.05)
            stop_alerts.set()
            await follow_alerts
            alert_delays = [arrived[lead] - due[lead] for lead in due if lead in arrived]
    finally:
        await changelog.stop()
        await alerts.stop()
    # A marker never seen counts with the time waited for it: a lower bound, not dropped.
    gave_up = time.time()
    samples = [seen.get(key, gave_up) - ts for key, ts in sent_at.items()]
    return Latency(
        samples=samples,
        histogram_p50=histogram_quantile(0.5, buckets_before, buckets_after),
        histogram_p99=histogram_quantile(0.99, buckets_before, buckets_after),
        sent=load_sent,
        rate=load_sent / elapsed if elapsed > 0 else 0.0,
        markers=len(sent_at),
        lost=sum(1 for key in sent_at if key not in seen),
        confirmations=confirmed,
        violations=len(shortfalls),
        shortfalls=shortfalls,
        alert_samples=alert_delays,
        alert_probes=len(due),
        foreign_cores=foreign,
    )


# --- the bench -------------------------------------------------------------------------------


@contextlib.contextmanager
def phase(run: _Run, name: str) -> Iterator[None]:
    """Time a step of the run into ``run.durations``."""
    started = time.monotonic()
    try:
        yield
    finally:
        run.durations[name] = round(time.monotonic() - started, 1)


def run_bench(
    settings: Settings,
    options: BenchOptions,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Run the whole bench; print the table to ``out`` (default stdout); return the figures."""
    out = out if out is not None else sys.stdout
    run = _Run(settings, options, out)
    wall = time.monotonic()
    results: dict[str, Throughput] = {}
    latency: Latency | None = None
    memory: dict[str, float] = {}
    profile: dict[str, Any] | None = None
    try:
        with phase(run, "setup"):
            run.start()
        run.log(
            f"bench: {options.events:,} events, {options.lead_count:,} leads, {options.reps} "
            f"reps over {options.span_days:g} days, {run.settings.partitions} partitions; "
            f"work dir {run.workdir}"
        )
        with phase(run, "produce"):
            asyncio.run(_produce_history(run.settings, options, sys.stderr))
        scripts = {"raw": "raw_consumer.py", "plain": "plain_faust.py", "naive": "naive_faust.py"}
        for name in ("raw", "plain", "naive"):
            if name in options.contenders:
                with phase(run, name):
                    results[name] = _measure_contender(run, name, scripts[name])
                run.log(_row(results[name]))
        if "kpi2" in options.contenders:
            with phase(run, "kpi2"):
                results["kpi2"], workers = _measure_kpi(run, "kpi2", 2)
                memory["2 workers"] = max(w.memory().get("VmHWM", 0.0) for w in workers)
                stop_workers(workers)
            run.log(_row(results["kpi2"]))
        if "kpi1" in options.contenders:
            with phase(run, "kpi1"):
                results["kpi1"], workers = _measure_kpi(run, "kpi1", 1, profile=options.profile)
            run.log(_row(results["kpi1"]))
            worker = workers[0]
            try:
                if not results["kpi1"].reached:
                    # Latency and memory are about a worker that holds the whole history.
                    with phase(run, "kpi1_catch_up"):
                        caught_up = _catch_up(run, worker)
                    results["kpi1"].extra["caught_up"] = caught_up
                    if not caught_up:
                        run.log("  (the worker did not catch up: latency includes a backlog)")
                spy = None
                if options.profile is not None:
                    spy = _start_profiler(worker.pid, options.profile, "worker-live")
                with phase(run, "latency"):
                    latency = asyncio.run(_latency_run(worker, options, run.tag, run.broker.pid))
                if spy is not None:
                    _stop_profiler(spy)
                memory.update(worker.memory())
            finally:
                stop_workers([worker])
            if options.profile is not None and (options.profile / "worker.folded").exists():
                profile = top_functions(options.profile / "worker.folded")
                live = options.profile / "worker-live.folded"
                if live.exists():
                    profile["live"] = top_functions(live)
    finally:
        run.close()
    run.durations["total"] = round(time.monotonic() - wall, 1)
    figures = _figures(run, results, latency, memory, profile)
    _print_table(run, results, latency, memory, figures, profile)
    out.write(json.dumps(figures, separators=(",", ":")) + "\n")
    out.flush()
    return figures


def _row(t: Throughput) -> str:
    label = _LABELS.get(t.name, t.name)
    bound = "" if t.reached else "  (time bound: count so far)"
    foreign = t.extra.get("foreign_cores", 0.0)
    return (
        f"  {label:<44} {t.events:>10,} {t.seconds:>8.1f}s {t.rate:>11,.0f}/s "
        f"{foreign:>8.2f}{bound}"
    )


_LABELS = {
    "raw": "raw aiokafka getmany + orjson.loads",
    "plain": "Faust agent doing nothing (raw values)",
    "naive": "naive Faust app (table += 1, json)",
    "kpi2": "KPI topology, 2 workers",
    "kpi1": "KPI topology, 1 worker",
}


def _ms(seconds: float | None) -> float | None:
    if seconds is None or seconds != seconds:  # None or NaN
        return None
    return round(seconds * 1000, 1)


def _rate(results: dict[str, Throughput], name: str) -> float | None:
    return round(results[name].rate, 1) if name in results else None


def _figures(
    run: _Run,
    results: dict[str, Throughput],
    latency: Latency | None,
    memory: dict[str, float],
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    opts = run.options
    figures: dict[str, Any] = {
        "events_per_s": _rate(results, "kpi1"),
        "events_per_s_2_workers": _rate(results, "kpi2"),
        "naive_faust_events_per_s": _rate(results, "naive"),
        "plain_faust_events_per_s": _rate(results, "plain"),
        "raw_consumer_events_per_s": _rate(results, "raw"),
        "p50_latency_ms": None,
        "p99_latency_ms": None,
        "alert_latency_ms": None,
        "rss_mb": round(memory["VmHWM"], 1) if "VmHWM" in memory else None,
        "n_events": opts.events,
        "leads": opts.lead_count,
        "reps": opts.reps,
        "partitions": run.settings.partitions,
        "quick": opts.quick,
        "cpus": os.cpu_count(),
        "reached": {name: t.reached for name, t in results.items()},
        "caught_up": results["kpi1"].extra.get("caught_up", True) if "kpi1" in results else None,
        "measured_seconds": {name: round(t.seconds, 2) for name, t in results.items()},
        "startup_seconds": {name: round(t.startup_seconds, 1) for name, t in results.items()},
        "foreign_cpu_cores": {
            name: round(t.extra.get("foreign_cores", 0.0), 2) for name, t in results.items()
        },
        "durations": run.durations,
        "code": {**run.version, "changed_before": run.code_changed},
    }
    if latency is not None:
        figures.update(
            {
                "p50_latency_ms": _ms(quantile(latency.samples, 0.5)),
                "p99_latency_ms": _ms(quantile(latency.samples, 0.99)),
                "max_latency_ms": _ms(max(latency.samples, default=float("nan"))),
                "latency_markers": len(latency.samples),
                "latency_markers_lost": latency.lost,
                "latency_scrape_checks": latency.confirmations,
                "latency_scrape_violations": latency.violations,
                "latency_scrape_shortfalls": latency.shortfalls,
                "latency_load_events_per_s": round(latency.rate, 1),
                "latency_foreign_cpu_cores": round(latency.foreign_cores, 2),
                "histogram_p50_latency_ms": _ms(latency.histogram_p50),
                "histogram_p99_latency_ms": _ms(latency.histogram_p99),
                "alert_latency_ms": _ms(max(latency.alert_samples))
                if latency.alert_samples
                else None,
                "alert_latency_p50_ms": _ms(quantile(latency.alert_samples, 0.5))
                if latency.alert_samples
                else None,
                "alert_probes": latency.alert_probes,
                "alerts_seen": len(latency.alert_samples),
            }
        )
    if "VmRSS" in memory:
        figures["rss_end_mb"] = round(memory["VmRSS"], 1)
    if "2 workers" in memory:
        figures["rss_mb_2_workers_max"] = round(memory["2 workers"], 1)
    figures["goals"] = _goals(figures)
    if profile is not None:
        figures["profile"] = {
            "throughput_top_self": [[f, round(x, 4)] for f, x in profile["self"][:10]],
            "throughput_top_streamproc": [[f, round(x, 4)] for f, x in profile["ours"][:10]],
        }
        if "live" in profile:
            figures["profile"]["live_top_streamproc"] = [
                [f, round(x, 4)] for f, x in profile["live"]["ours"][:10]
            ]
    return figures


def _goals(figures: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for name, check in GOALS.items():
        try:
            out[name] = bool(check(figures))
        except (TypeError, ZeroDivisionError, KeyError):
            out[name] = None  # a figure is missing (n/a)
    return out


def _print_table(
    run: _Run,
    results: dict[str, Throughput],
    latency: Latency | None,
    memory: dict[str, float],
    figures: dict[str, Any],
    profile: dict[str, Any] | None,
) -> None:
    w = run.log
    opts = run.options
    w("")
    w(
        f"streamproc bench ({'quick' if opts.quick else 'full'}): {opts.events:,} events "
        f"({opts.lead_count:,} leads, {opts.reps} reps, {opts.span_days:g} days), "
        f"{run.settings.partitions} partitions, {os.cpu_count()} CPUs, "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    w(
        f"  {'throughput, reading the history from the start':<44} {'events':>10} {'time':>9} "
        f"{'rate':>13} {'others*':>8}"
    )
    for name in ("kpi1", "kpi2", "naive", "plain", "raw"):
        if name in results:
            w(_row(results[name]))
    if "kpi1" in results:
        kpi = results["kpi1"].rate
        for name, label in (
            ("kpi2", "2 workers / 1"),
            ("naive", "1 worker / naive"),
            ("plain", "1 worker / plain agent"),
        ):
            if name in results and results[name].rate:
                ratio = results[name].rate / kpi if name == "kpi2" else kpi / results[name].rate
                w(f"  {'ratio ' + label:<44} {ratio:>34.2f}x")
    if latency is not None:
        w(
            f"  latency at {latency.rate:,.0f} events/s (append -> /metrics): "
            f"p50 {figures['p50_latency_ms']} ms, p99 {figures['p99_latency_ms']} ms, "
            f"max {figures['max_latency_ms']} ms over {latency.markers} markers "
            f"({latency.lost} lost; /metrics checks: {latency.confirmations} ok, "
            f"{latency.violations} failed; others used {latency.foreign_cores:.2f} cores)"
        )
        w(
            f"  worker's delay histogram over the same run: p50 "
            f"{figures['histogram_p50_latency_ms']} ms, p99 {figures['histogram_p99_latency_ms']}"
            " ms (bucket interpolation)"
        )
        if latency.alert_samples:
            w(
                f"  SLA breach -> alert: max {figures['alert_latency_ms']} ms, p50 "
                f"{figures['alert_latency_p50_ms']} ms ({len(latency.alert_samples)} of "
                f"{latency.alert_probes} probes alerted)"
            )
        else:
            w(f"  SLA breach -> alert: n/a (no alert for {latency.alert_probes} probe leads)")
    if memory:
        w(
            f"  worker peak RSS (VmHWM): {figures['rss_mb']} MiB after the history and the "
            f"latency run (now {figures.get('rss_end_mb')} MiB)"
        )
    if profile is not None:
        w("  profile of the 1-worker history run (py-spy; share of samples):")
        w("    on top of the stack (self):")
        for frame, share in profile["self"][:8]:
            w(f"      {share * 100:5.1f}%  {frame}")
        w("    streamproc functions, callees included:")
        for frame, share in profile["ours"][:10]:
            w(f"      {share * 100:5.1f}%  {frame}")
        if "live" in profile:
            w("  profile of the latency run, streamproc functions, callees included:")
            for frame, share in profile["live"]["ours"][:10]:
                w(f"      {share * 100:5.1f}%  {frame}")
    w("  goals: " + ", ".join(f"{k}: {_verdict(v)}" for k, v in figures["goals"].items()))
    w("  * CPU cores used by other processes on the machine meanwhile (not the bench's)")
    w(f"  durations (s): {run.durations}")


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else "met" if value else "NOT met"


# --- backfill --------------------------------------------------------------------------------


def write_history_jsonl(settings: Settings, options: BenchOptions, path: Path) -> int:
    """The simulator's history as replay input, wrapped form (``{"type", "event"}``)."""
    events = history(
        settings,
        options.events,
        options.lead_count,
        options.span_days * DAY,
        reps=options.reps,
        seed=options.seed,
    )
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
    run = _Run(settings, options, out)
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
        _wait_ready([worker], options.start_timeout)
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
            _follow_commits(
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
