"""The processes a run measures: ``streamproc worker`` subprocesses, the CPU others use and
a process's memory (both from /proc), and the version of the worker code measured."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

import streamproc
from benchmarks.options import MIB, BenchError
from streamproc.config import Settings, child_env
from streamproc.tools.processes import spawn_child

__all__ = [
    "CpuWatch",
    "WorkerHandle",
    "code_version",
    "proc_memory",
    "stop_process",
    "stop_workers",
]


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 8.0) -> None:
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
        self._each = {p: _pid_jiffies(p) for p in self.pids}

    def cpu_seconds(self, pids: Sequence[int]) -> float:
        """CPU seconds the given processes (among ours) used since the start: a cost per
        event that the machine's other load changes far less than a rate."""
        return sum(_pid_jiffies(p) - self._each[p] for p in pids) / _CLK_TCK

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
    package = Path(streamproc.__file__).resolve().parent
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
        # A render of every series took > 10 s on a machine loaded with two other jobs
        # (load average 5 on 2 cores): slow is not down.
        status, body = self.get("/metrics", timeout=30.0)
        if status != 200:
            self.check_alive()
            raise BenchError(f"/metrics answered {status}")
        return body

    def memory(self) -> dict[str, float]:
        return proc_memory(self.pid) if self.proc is not None else {}

    def stop(self, timeout: float = 8.0) -> None:
        stop_process(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
