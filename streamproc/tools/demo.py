"""``streamproc demo``: embedded broker, topics, a worker and a simulated team, in one command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import Settings, child_env
from streamproc.exceptions import StreamprocError
from streamproc.kafka.topics import create_topics
from streamproc.serving.http import check_web_port
from streamproc.tools.broker import EmbeddedBroker
from streamproc.tools.net import free_port
from streamproc.tools.processes import spawn_child

__all__ = ["run_demo"]

log = logging.getLogger(__name__)
SUMMARY_EVERY = 5.0


def run_demo(settings: Settings, rate: float, reps: int) -> int:
    """Run until Ctrl-C (or SIGTERM); every child process is stopped on the way out.

    The logs and data live in a temp dir, removed on a clean stop; kept (and named) when
    something failed, since its logs then hold the cause.
    """
    check_web_port(settings)  # before anything starts: the one error a newcomer often hits
    stop = _stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="streamproc-demo-"))
    try:
        _run(settings, rate, reps, workdir, stop)
    except BaseException:
        print(f"the demo's logs are kept in {workdir}", file=sys.stderr)  # noqa: T201
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print("streamproc demo stopped.")  # noqa: T201
    return 0


def _run(settings: Settings, rate: float, reps: int, workdir: Path, stop: list[bool]) -> None:
    with EmbeddedBroker(free_port(), log_path=workdir / "broker.log") as broker:
        demo = settings.model_copy(update={"broker_url": broker.url, "data_dir": workdir / "data"})
        asyncio.run(create_topics(demo))
        worker_log = workdir / "worker.log"
        with _child(demo, ["worker"], worker_log) as worker:
            _wait_ready(demo, worker, worker_log, stop)
            sim = ["simulate", "--rate", str(rate), "--reps", str(reps)]
            sim_log = workdir / "simulate.log"
            with _child(demo, sim, sim_log) as simulator:
                _banner(demo, broker.url, workdir)
                _summaries(
                    demo, {"worker": (worker, worker_log), "simulator": (simulator, sim_log)}, stop
                )


def _stop_on_signals() -> list[bool]:
    stop = [False]

    def handler(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@contextlib.contextmanager
def _child(
    settings: Settings, args: list[str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    out: IO[bytes] = log_path.open("ab")
    proc = spawn_child([sys.executable, "-m", "streamproc", *args], out, child_env(settings))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        out.close()


def _get(settings: Settings, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


def _wait_ready(
    settings: Settings, worker: subprocess.Popen[bytes], log_path: Path, stop: list[bool]
) -> None:
    print("starting the worker ...", flush=True)  # noqa: T201
    while not stop[0] and _get(settings, "/readyz")[0] != 200:
        if worker.poll() is not None:
            raise StreamprocError(
                f"the worker exited with {worker.returncode}: {last_error(log_path)}"
            )
        time.sleep(0.5)


def last_error(log_path: Path) -> str:
    """The cause a worker's log gives for its exit: its one-line ``streamproc:`` error, else
    the last line naming an error, else a pointer to the log."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return f"no log at {log_path}"
    ours = [line for line in lines if line.startswith("streamproc: ")]
    if ours:
        return ours[-1].removeprefix("streamproc: ")
    errors = [line for line in lines if "Error" in line]
    return errors[-1].strip() if errors else f"see {log_path}"


def _banner(settings: Settings, broker_url: str, workdir: Path) -> None:
    base = f"http://127.0.0.1:{settings.web_port}"
    print(  # noqa: T201
        f"""
streamproc demo is running (Ctrl-C to stop)
  metrics (Prometheus):  {base}/metrics
  KPIs as JSON:          {base}/kpis   e.g. {base}/kpis?metric=sales_forecast_value
  health / readiness:    {base}/healthz  {base}/readyz
  embedded broker:       {broker_url}   (point a producer at it)
  logs:                  {workdir}   (removed on Ctrl-C)
""",
        flush=True,
    )


def _summaries(
    settings: Settings,
    children: dict[str, tuple[subprocess.Popen[bytes], Path]],
    stop: list[bool],
) -> None:
    next_at = time.monotonic()
    while not stop[0]:
        for name, (child, log_path) in children.items():
            if child.poll() is not None:
                raise StreamprocError(
                    f"the {name} exited with {child.returncode}: {last_error(log_path)}"
                )
        if time.monotonic() >= next_at:
            status, text = _get(settings, "/metrics")
            if status == 200:
                print(summary_line(text), flush=True)  # noqa: T201
            next_at = time.monotonic() + SUMMARY_EVERY
        time.sleep(0.2)


def summary_line(metrics_text: str) -> str:
    """Leads waiting, response time today, attempts today, forecast: one terminal line."""
    waiting = over = attempts = forecast = 0.0
    mean: dict[str, float] = {}
    firsts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            today = s.labels.get("window") == "today"
            if s.name == "sales_leads_awaiting_contact":
                waiting += s.value
            elif s.name == "sales_leads_awaiting_contact_over_sla":
                over += s.value
            elif s.name == "sales_contact_attempts" and today:
                attempts += s.value
            elif s.name == "sales_forecast_value":
                forecast += s.value
            elif s.name == "sales_response_time_avg_seconds" and today:
                mean[s.labels["rep"]] = s.value
            elif s.name == "sales_first_contacts" and today:
                firsts[s.labels["rep"]] = firsts.get(s.labels["rep"], 0.0) + s.value
    # the team's mean response: each rep's mean weighted by that rep's first contacts
    weight = sum(firsts.get(rep, 0.0) for rep in mean)
    total = sum(value * firsts.get(rep, 0.0) for rep, value in mean.items())
    response = f"{total / weight:,.0f} s" if weight else "-"
    return (
        f"{time.strftime('%H:%M:%S')}  leads waiting {waiting:,.0f} ({over:,.0f} over SLA)"
        f" | mean response today {response} | attempts today {attempts:,.0f}"
        f" | forecast {forecast:,.0f}"
    )
