"""Where the KPI snapshots go: one small interface, and the outage bookkeeping sinks share.

Who calls what:

- The worker calls ``await sink.start()`` once, after the app has started and before the
  first ``publish``.
- A timer calls ``await sink.publish(samples, now)`` every ``publish_interval_seconds``
  with the *whole* current value of every series this worker owns (``now``: the wall
  clock, epoch seconds, that the samples were computed at). ``publish`` only hands the
  snapshot over and returns at once: it never waits for I/O and never raises. The sink
  flushes from its own background task, fed by the latest snapshot only (snapshots that
  arrive while it is busy are replaced by newer ones: only the latest values matter).
- A failing flush (broker or Redis down or slow) is logged once when the outage starts
  and once when it ends; the flush is retried with backoff, with the latest snapshot.
  Nothing is raised into the caller and event processing goes on.
- The worker calls ``await sink.stop()`` once at shutdown: a last flush bounded by a short
  timeout, then the background task is cancelled and connections are closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Gauge

from streamproc.kpis.compute import Sample

__all__ = ["Backoff", "Outage", "Sink", "rfc3339", "stop_task"]

log = logging.getLogger(__name__)


class Sink(Protocol):
    """A destination of KPI snapshots with a lifecycle (see the module docstring)."""

    async def start(self) -> None:
        """Start the background flusher; never blocks on the destination being up."""

    async def publish(self, samples: Sequence[Sample], now: float) -> None:
        """Hand over the whole current snapshot; returns at once, never raises."""

    async def stop(self) -> None:
        """Last best-effort flush (bounded), then stop the flusher and release resources."""

    @property
    def status(self) -> dict[str, Any]:
        """Health for /readyz details, e.g. ``{"redis": "down", "since": "...Z"}``."""


def rfc3339(epoch: float) -> str:
    """Epoch seconds as RFC 3339 UTC with a ``Z``, millisecond precision."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


async def stop_task(task: asyncio.Task[Any], attempts: int = 50) -> None:
    """Cancel a background task and wait until it is done.

    Cancels again while it runs: a cancellation that lands as an awaited future completes
    can be lost inside library code, and a task left running would outlive its sink.
    """
    for _ in range(attempts):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            break
    else:
        log.warning("background task %s did not stop", task.get_name())
        return
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


class Backoff:
    """Exponential retry delays: ``initial`` doubling up to ``maximum``, reset on success."""

    def __init__(self, initial: float = 0.5, maximum: float = 10.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class Outage:
    """One dependency's health: logs an outage once when it starts and once when it ends."""

    def __init__(
        self, name: str, log: logging.Logger, gauge: Gauge | None = None, target: str = ""
    ) -> None:
        self.name = name
        self.target = target or name
        self._log = log
        self._gauge = gauge
        self.state = "connecting"
        self.since = time.time()
        self.error: str | None = None

    @property
    def down(self) -> bool:
        return self.state == "down"

    def failed(self, exc: BaseException, hint: str = "") -> None:
        """``hint``: what to check, for a failure that waiting will not cure."""
        self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if hint:
            self.error += f": {hint}"
        if self.state != "down":
            self._log.warning(
                "%s unavailable, retrying in the background: %s", self.target, self.error
            )
            self._set("down", 0)

    def ok(self) -> None:
        if self.state == "down":
            self._log.info("%s available again after %.1fs", self.target, time.time() - self.since)
        if self.state != "up":
            self.error = None
            self._set("up", 1)

    def _set(self, state: str, gauge: int) -> None:
        self.state = state
        self.since = time.time()
        if self._gauge is not None:
            self._gauge.set(gauge)

    def status(self) -> dict[str, Any]:
        """For /readyz details, e.g. ``{"redis": "down", "since": ..., "error": ...}``."""
        out: dict[str, Any] = {self.name: self.state, "since": rfc3339(self.since)}
        if self.error is not None:
            out["error"] = self.error
        return out
