"""Drives real worker processes: start, scrape, kill, and add up what several workers export."""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import Settings, child_env
from streamproc.tools.processes import spawn_child

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s (last: {last!r})")


async def async_wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """``wait_until`` on the event loop: ``check`` may return a value or an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


class WorkerProcess:
    """One ``streamproc worker`` subprocess with its own web port and log file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str) -> None:
        self.settings = settings
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.proc: Any = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.web_tls_certfile else "http"
        return f"{scheme}://127.0.0.1:{self.settings.web_port}"

    def _credentials(self) -> dict[str, str]:
        """The worker's own credentials (``STREAMPROC_WEB_AUTH_*``), as Prometheus sends them."""
        s = self.settings
        if s.web_auth_token is not None:
            return {"Authorization": f"Bearer {s.web_auth_token.get_secret_value()}"}
        if s.web_auth_username is not None and s.web_auth_password is not None:
            pair = f"{s.web_auth_username}:{s.web_auth_password.get_secret_value()}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        return {}

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        env = child_env(self.settings)
        argv = [sys.executable, "-m", "streamproc", "worker"]
        self.proc = spawn_child(argv, self._log, env)
        return self

    def get(
        self, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """GET over HTTPS (trusting ``STREAMPROC_WEB_TLS_CAFILE``) when the worker serves it,
        with the worker's credentials unless ``headers`` are given."""
        request = urllib.request.Request(
            self.base_url + path, headers=self._credentials() if headers is None else headers
        )
        context = None
        if self.settings.web_tls_certfile is not None:
            context = ssl.create_default_context(cafile=self.settings.web_tls_cafile)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ready(self) -> bool:
        self._check_alive()
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        wait_until(self.ready, timeout)
        return self

    def metrics_text(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body.decode()

    def samples(self) -> dict[SeriesKey, float]:
        return parse_samples(self.metrics_text())

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log()[-3000:]
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{tail}")


def parse_samples(text: str) -> dict[SeriesKey, float]:
    out: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def combined(
    workers: Iterable[WorkerProcess],
) -> tuple[dict[SeriesKey, float], dict[SeriesKey, int]]:
    """What ``sum by`` over all workers shows, and how many workers export each series."""
    total: dict[SeriesKey, float] = defaultdict(float)
    exporters: dict[SeriesKey, int] = defaultdict(int)
    for worker in workers:
        for key, value in worker.samples().items():
            total[key] += value
            exporters[key] += 1
    return dict(total), dict(exporters)


def series(name: str, **labels: str) -> SeriesKey:
    return (name, frozenset(labels.items()))


def select(samples: dict[SeriesKey, float], prefix: str) -> dict[SeriesKey, float]:
    return {k: v for k, v in samples.items() if k[0].startswith(prefix)}


class TopicReader:
    """Reads a topic from the start with an external client (assign: no group join wait)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.broker_hosts,
                "group.id": "test-reader",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        # (arrival time, key, decoded JSON value; None: a tombstone)
        self.records: list[tuple[float, str | None, Any]] = []

    def poll(self, seconds: float = 0.5) -> list[tuple[float, str | None, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.05)
            if msg is not None and not msg.error():
                key = msg.key().decode() if msg.key() is not None else None
                value = None if msg.value() is None else orjson.loads(msg.value())
                self.records.append((time.time(), key, value))
        return self.records

    def values(self) -> list[Any]:
        """Every value read, tombstones left out."""
        return [value for _, _, value in self.records if value is not None]

    def latest(self) -> dict[str | None, Any]:
        """The latest value per key: what a compacted topic keeps (a tombstone: nothing)."""
        latest = {key: value for _, key, value in self.records}
        return {key: value for key, value in latest.items() if value is not None}

    def close(self) -> None:
        self.consumer.close()


def vm_rss_kib(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in ``/proc/<pid>/status``), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def run_cli(
    settings: Settings, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``streamproc ARGS`` in a child process that sees exactly ``settings``."""
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def event_counts(worker: WorkerProcess) -> dict[str, float]:
    """``streamproc_events_total`` of a worker by outcome."""
    out: dict[str, float] = defaultdict(float)
    for (name, labels), value in worker.samples().items():
        if name == "streamproc_events_total":
            out[dict(labels)["outcome"]] += value
    return dict(out)


def lead_cache_reads(worker: WorkerProcess) -> float:
    """``streamproc_lead_cache_reads_total``: leads the worker read back from its disk."""
    return worker.samples()[("streamproc_lead_cache_reads_total", frozenset())]


def leads_created_7d(worker: WorkerProcess) -> float:
    """``sales_leads_created{window="7d"}`` summed over its other labels."""
    return sum(
        value
        for (name, labels), value in worker.samples().items()
        if name == "sales_leads_created" and dict(labels).get("window") == "7d"
    )
