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
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import Settings, child_env
from streamproc.exceptions import StreamprocError
from streamproc.kafka.producer import EventProducer
from streamproc.kafka.topics import create_topics
from streamproc.serving.http import check_web_port
from streamproc.tools.broker import EmbeddedBroker
from streamproc.tools.net import free_port
from streamproc.tools.processes import spawn_child
from streamproc.tools.progress import Progress
from streamproc.tools.sales_team import CONTACT_ATTEMPTED, SalesTeam, SimEvent, rfc3339
from streamproc.tools.simulate import (
    DEMO_PACE,
    DEMO_RESPONSE_SCALE,
    demo_history,
    run_team,
    send_past,
)
from streamproc.tools.targets import plausible_targets, publish_targets

__all__ = ["run_demo"]

log = logging.getLogger(__name__)
SUMMARY_EVERY = 5.0


def run_demo(settings: Settings, rate: float, reps: int, history_days: float) -> int:
    """Run until Ctrl-C (or SIGTERM); every child process is stopped on the way out.

    The logs and data live in a temp dir, removed on a clean stop; kept (and named) when
    something failed, since its logs then hold the cause.
    """
    check_web_port(settings)  # before anything starts: the one error a newcomer often hits
    stop = _stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="streamproc-demo-"))
    try:
        _run(settings, rate, reps, history_days, workdir, stop)
    except BaseException:
        print(f"the demo's logs are kept in {workdir}", file=sys.stderr)  # noqa: T201
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print("streamproc demo stopped.")  # noqa: T201
    return 0


def _run(
    settings: Settings,
    rate: float,
    reps: int,
    history_days: float,
    workdir: Path,
    stop: list[bool],
) -> None:
    history = demo_history(rate, reps, history_days)
    team = SalesTeam.for_rate(
        settings,
        rate,
        reps,
        pace=DEMO_PACE,
        history=history,
        response_scale=DEMO_RESPONSE_SCALE,
        outcomes=True,
    )
    past = team.invoices() + team.past_events()
    with EmbeddedBroker(free_port(), log_path=workdir / "broker.log") as broker:
        update: dict[str, Any] = {"broker_url": broker.url, "data_dir": workdir / "data"}
        if not settings.activity_targets:  # the leaderboard needs targets: the team's pace
            update["activity_targets"] = daily_targets(past, team.start - history.warm_seconds)
        demo = settings.model_copy(update=update)
        asyncio.run(create_topics(demo))
        # every target panel shows data: quotas sized to the simulated team (the daily
        # attempts: the activity targets above, from the team's own pace)
        reps_ids = [rep.rep_id for rep in team.reps]
        quotas = plausible_targets(reps_ids, team.lead_rate)
        quotas = [t for t in quotas if t[0] != "contact_attempts"]
        asyncio.run(publish_targets(demo, quotas))
        worker_log = workdir / "worker.log"
        with _child(demo, ["worker"], worker_log) as worker:
            _wait_ready(demo, worker, worker_log, stop)
            if not stop[0]:
                _backfill(demo, past, worker, worker_log, stop)
            if stop[0]:  # Ctrl-C before the team went live
                return
            with _LiveTeam(demo, team) as live:
                _banner(demo, broker.url, workdir)
                _summaries(demo, {"worker": (worker, worker_log)}, live, stop)


def daily_targets(past: list[SimEvent], since: float) -> dict[str, float]:
    """Each rep's daily contact-attempt target: twice the attempts of the warm hour before
    the start, so a rep is about half-way on the first look and on target an hour later."""
    cutoff = rfc3339(since)
    counts: Counter[str] = Counter(
        event["rep_id"]
        for kind, event in past
        if kind == CONTACT_ATTEMPTED and event["occurred_at"] >= cutoff
    )
    return {rep: float(max(10, round(2 * n, -1))) for rep, n in sorted(counts.items())}


def _backfill(
    settings: Settings,
    past: list[SimEvent],
    worker: subprocess.Popen[bytes],
    log_path: Path,
    stop: list[bool],
) -> None:
    """Send the past, then wait (with a progress bar) until the worker has read all of it."""

    async def send() -> None:
        async with EventProducer(settings, linger_ms=20, client_id="streamproc-demo") as out:
            await send_past(past, out, stream=sys.stdout, label="history sent")

    asyncio.run(send())
    bar = Progress(len(past), stream=sys.stdout, label="history read")
    while not stop[0] and bar.position < len(past):
        if worker.poll() is not None:
            raise StreamprocError(
                f"the worker exited with {worker.returncode}: {last_error(log_path)}"
            )
        read = _events_read(settings)
        bar.update(max(0, read - bar.count), position=read)
        time.sleep(0.25)
    bar.close()
    _wait_settled(settings, stop)


def _wait_settled(settings: Settings, stop: list[bool], longest: float = 15.0) -> None:
    """Until /metrics stops growing: the whole series (ratios, means) come a publish round
    or two after the events are read (measured: 2-4 s), and the first look should have them."""
    deadline = time.monotonic() + longest
    before = -1
    while not stop[0] and time.monotonic() < deadline:
        time.sleep(max(1.0, 2 * settings.publish_interval_seconds))
        status, text = _get(settings, "/metrics")
        series = text.count("\n") if status == 200 else -1
        if series == before:
            return
        before = series


def _events_read(settings: Settings) -> int:
    """Input messages the worker has read (every outcome), from its /metrics."""
    status, text = _get(settings, "/metrics")
    if status != 200:
        return 0
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            if family.name == "streamproc_events"
            for s in family.samples
            if s.name == "streamproc_events_total"
        )
    )


class _LiveTeam:
    """The team's live events, sent from a thread with its own event loop."""

    def __init__(self, settings: Settings, team: SalesTeam) -> None:
        self._settings, self._team = settings, team
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="demo-team", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self._send())
        except BaseException as exc:  # reported by the summary loop
            self.error = exc
        finally:
            self._loop.close()

    async def _send(self) -> None:
        self._stop = asyncio.Event()
        async with EventProducer(self._settings, client_id="streamproc-demo") as out:
            await run_team(self._team, out, stop=self._stop, log_every=3600.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> _LiveTeam:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        if stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(15)


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
    live: _LiveTeam,
    stop: list[bool],
) -> None:
    next_at = time.monotonic()
    while not stop[0]:
        if not live.alive:
            raise StreamprocError(f"the simulated team stopped: {live.error!r}")
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
