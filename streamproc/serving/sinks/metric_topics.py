"""Metric topics sink: owned series on their family's compacted topic, on change, coalesced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from streamproc.config import Settings
from streamproc.contract.outputs import MetricMessage, series_key
from streamproc.engine.windows import WindowBounds
from streamproc.kafka.topics import topic_names
from streamproc.kpis.catalogue import KPIS
from streamproc.kpis.compute import Sample
from streamproc.runtime.slices import run_in_slices
from streamproc.serving.sinks.base import Backoff, Outage, stop_task

__all__ = ["MetricTopicsSink", "Owns", "Send"]

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes | None], Awaitable[None]]
"""``send(topic, key, value)``: produce one record (e.g. a Faust topic's send); a None
value is a tombstone."""
Owns = Callable[[str, dict[str, str]], bool]
"""``owns(metric, labels) -> bool``: whether this worker currently owns the series."""
Kind = Literal["value", "final", "tombstone"]
# a calendar period's previous one: ``last_month`` holds the final values of a ``month``
_ENDED = {"last_month": "month", "last_quarter": "quarter", "last_year": "year"}
# A period that ended at most this long before the sink's first snapshot gets its final
# from its last_* series (a restart or take-over across the 1st). Not every period before:
# each start would send the finals of every last_* series again, ~a third of all series.
CLOSE_LATE_SECONDS = 86400.0


class _SendFailed(Exception):
    """A send failed: the cycle stops, and the next one retries with the latest values."""


@dataclass(frozen=True, slots=True)
class _Value:
    """One series' value as seen in a snapshot."""

    metric: str
    labels: dict[str, str]
    window: WindowBounds | None
    value: float

    @property
    def start(self) -> float | None:
        return None if self.window is None else self.window.start


@dataclass(frozen=True, slots=True)
class _Sent:
    """What the topic last got for a series, and when (monotonic)."""

    value: float
    start: float | None
    at: float


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _encode(value: _Value, final: bool, emitted_at: float) -> tuple[bytes, bytes]:
    """The record of one series value: canonical series key, MetricMessage JSON."""
    window = value.window
    message = MetricMessage(
        metric=value.metric,
        labels=value.labels,
        window=None if window is None else window.name,  # type: ignore[arg-type]
        window_start=None if window is None else _utc(window.start),
        window_end=None if window is None else _utc(window.end),
        value=value.value,
        final=final,
        emitted_at=_utc(emitted_at),
    )
    return message.key.encode(), message.model_dump_json().encode()


def _series(value: _Value) -> str:
    """The series' canonical key (its record key too): metric and labels incl. window."""
    if value.window is None:
        return series_key(value.metric, value.labels)
    return series_key(value.metric, {**value.labels, "window": value.window.name})


class MetricTopicsSink:
    """Publishes every owned series on ``sales.metrics.<family>`` when its value changes.

    Per series: at most one message per ``publish_interval_seconds`` (the latest value
    wins), and when a window moves on, one ``final: true`` message with the old window's
    last value before the new window's first. A series this worker still owns that
    vanishes (nothing in the window that holds now, a denominator at 0, a live gauge at
    no value) gets a tombstone once missing for the interval, after its final if its
    window ended: its last value must not read as the current one (/metrics, /kpis and
    Redis no longer have it either). One that moved to another worker gets none.
    """

    def __init__(
        self,
        settings: Settings,
        send: Send,
        owns: Owns,
        *,
        send_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._send = send
        self._owns = owns
        self._interval = settings.publish_interval_seconds
        self._topics = topic_names(settings).metrics
        self._send_timeout = send_timeout
        self._stop_timeout = stop_timeout
        self._backoff = backoff or Backoff(0.5, 10.0)
        self._outage = Outage("kafka", log, target="metric topics")
        self._latest: tuple[tuple[Sample, ...], float] | None = None
        self._wake = asyncio.Event()
        self._seen: dict[str, _Value] = {}
        self._sent: dict[str, _Sent] = {}
        self._finals: dict[str, _Value] = {}
        # a period series -> the start of its period whose final this worker queued
        self._closed: dict[str, float] = {}
        self._close_after: float | None = None  # CLOSE_LATE_SECONDS before the first snapshot
        self._gone: dict[str, tuple[_Value, float]] = {}  # vanished -> (last, since: monotonic)
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> dict[str, Any]:
        return self._outage.status()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="metric-topics-sink")

    async def publish(self, samples: Sequence[Sample], now: float) -> None:
        # Only the latest snapshot matters: a newer one replaces one not yet taken.
        self._latest = (tuple(samples), now)
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await stop_task(task)
        try:
            # The interval no longer matters: the next owner starts from nothing.
            async with asyncio.timeout(self._stop_timeout):
                await self._cycle(force=True)
        except TimeoutError:
            log.warning("metric topics: last flush did not finish within %gs", self._stop_timeout)
        except _SendFailed:
            log.warning("metric topics: last flush failed")
        except Exception:
            log.exception("metric topics: last flush failed")

    # --- background task ---------------------------------------------------------------

    async def _run(self) -> None:
        delay: float | None = None
        failed = False
        while True:
            if failed:
                # Retry on the backoff schedule, not on every new snapshot.
                await asyncio.sleep(delay or 0.0)
            else:
                await self._wait(delay)
            try:
                delay, failed = await self._cycle(), False
            except _SendFailed:
                delay, failed = self._backoff.next(), True
            except Exception:
                log.exception("metric topics: unexpected error, retrying")
                delay, failed = self._backoff.next(), True

    async def _wait(self, at_most: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._wake.wait()
        self._wake.clear()

    async def _cycle(self, force: bool = False) -> float | None:
        """Take the latest snapshot, send what is due; return how long until more is due."""
        latest, self._latest = self._latest, None
        if latest is not None:
            await run_in_slices(self._fold(*latest))
        due, next_due = await run_in_slices(self._due(time.monotonic(), force))
        for i, (key, value, kind) in enumerate(due, 1):
            await self._deliver(key, value, kind)
            if i % 200 == 0:
                await asyncio.sleep(0)  # a send that never suspends must not starve the agents
        self._backoff.reset()
        mono = time.monotonic()
        self._prune(mono)
        if next_due is None:
            return None
        # A little later than the first held-back series is ready: the ones that became
        # ready just after it go in the same cycle, not one cycle (a full scan) each.
        return max(0.0, next_due - mono) + min(0.05, self._interval / 20)

    def _fold(self, samples: tuple[Sample, ...], now: float) -> Generator[None, None, None]:
        """Adopt a snapshot; queue a final for every window that moved on or ended. In steps
        (``slices``): at 100 reps a snapshot holds ~20,000 series."""
        fresh: dict[str, _Value] = {}
        for sample in samples:
            if math.isfinite(sample.value):  # NaN/inf cannot be a message value
                value = _Value(sample.metric, sample.labels, sample.window, sample.value)
                fresh[_series(value)] = value
            yield None
        mono = time.monotonic()
        for key, old in self._seen.items():
            new = fresh.get(key)
            if old.window is not None and _window_over(old.window, new, now):
                # Several ended windows while the broker was down: the latest one is kept.
                self._finals[key] = old
                if old.window.name in _ENDED.values():
                    self._closed[key] = old.window.start
            if new is None and self._owns(old.metric, old.labels):
                self._gone.setdefault(key, (old, mono))
        for key in [key for key in self._gone if key in fresh]:
            del self._gone[key]  # back before its tombstone went: as if never gone
        self._close_unseen_periods(fresh, now)
        self._seen = fresh

    def _close_unseen_periods(self, fresh: dict[str, _Value], now: float) -> None:
        """A period that ended before this worker saw it (it started after the period's
        end, within ``CLOSE_LATE_SECONDS``, or took its series over since) gets its
        ``final: true`` too, from the ``last_*`` series that holds its final values: a
        restart across the 1st of a month left subscribers with no final for that month at
        all. At least once: a period a worker before this one closed may get it again."""
        if self._close_after is None:
            self._close_after = now - CLOSE_LATE_SECONDS
        periods: set[str] = set()
        for last_key, value in fresh.items():
            window = value.window
            if window is None or window.name not in _ENDED or window.end < self._close_after:
                continue
            seen = self._seen.get(last_key)
            if seen is not None and seen.start == window.start:
                continue  # looked at in an earlier snapshot: not keyed again each round
            closing = _Value(
                value.metric, value.labels, replace(window, name=_ENDED[window.name]), value.value
            )
            key = _series(closing)
            periods.add(key)
            if self._closed.get(key) != window.start:
                self._closed[key] = window.start
                self._finals[key] = closing
                if key not in fresh:  # nothing in the period now: gone, after its final
                    self._gone.setdefault(key, (closing, time.monotonic()))
        # Bounded by the series served, not pruned every round: a pass over every key.
        if len(self._closed) > 2 * len(fresh) + 64:
            keep = periods | fresh.keys()
            self._closed = {k: v for k, v in self._closed.items() if k in keep}

    def _due(
        self, mono: float, force: bool
    ) -> Generator[None, None, tuple[list[tuple[str, _Value, Kind]], float | None]]:
        """Finals first (they precede their series' next window or tombstone), then
        tombstones missing for the interval, then changed values."""
        due: list[tuple[str, _Value, Kind]] = [(k, v, "final") for k, v in self._finals.items()]
        # A final of a period closed late (from its last_* series, after the current value
        # went out) must not stay its key's latest record: the current value follows it.
        late = {
            k for k, v in self._finals.items() if k in self._seen and self._seen[k].start != v.start
        }
        next_due: float | None = None
        for key, (value, since) in self._gone.items():
            ready = since + self._interval
            if force or mono >= ready:
                due.append((key, value, "tombstone"))
            else:
                next_due = ready if next_due is None else min(next_due, ready)
        for key, value in self._seen.items():
            yield None
            sent = None if key in late else self._sent.get(key)
            if sent is not None and (sent.value, sent.start) == (value.value, value.start):
                continue
            if sent is not None and sent.start == value.start and not force:
                ready = sent.at + self._interval
                if mono < ready:
                    next_due = ready if next_due is None else min(next_due, ready)
                    continue
            due.append((key, value, "value"))
        return due, next_due

    async def _deliver(self, key: str, value: _Value, kind: Kind) -> None:
        """Send one record; raise ``_SendFailed`` (outage logged once) when the send fails."""
        record = self._record(key, value, kind)
        if record is not None:
            topic = self._topics[KPIS[value.metric].topic]
            try:
                async with asyncio.timeout(self._send_timeout):
                    await self._send(topic, *record)
            except Exception as exc:  # any producer error: the next cycle retries
                self._outage.failed(exc)
                raise _SendFailed from exc
            self._outage.ok()
        if kind == "final":
            self._finals.pop(key, None)
        elif kind == "tombstone":
            self._gone.pop(key, None)
            self._sent.pop(key, None)  # back later: published afresh
        else:
            self._sent[key] = _Sent(value.value, value.start, time.monotonic())

    @staticmethod
    def _record(key: str, value: _Value, kind: Kind) -> tuple[bytes, bytes | None] | None:
        if kind == "tombstone":
            return key.encode(), None
        try:
            return _encode(value, kind == "final" or _ended(value.window), time.time())
        except ValueError:
            log.exception("metric topics: cannot encode %s, dropped", key)
            return None

    def _prune(self, mono: float) -> None:
        # A vanished series' last send still counts for the interval (it may come back);
        # after that it is forgotten, so a series that returns is published afresh.
        if len(self._sent) > len(self._seen):
            for key in [k for k in self._sent if k not in self._seen]:
                if self._sent[key].at + self._interval <= mono:
                    del self._sent[key]


def _ended(window: WindowBounds | None) -> bool:
    """A ``last_*`` window: a complete period, its values final whenever they go out (a
    late event of a lead still kept may correct them, again as final)."""
    return window is not None and window.name in _ENDED


def _window_over(old: WindowBounds, new: _Value | None, now: float) -> bool:
    """The old window is over: the series moved to a new window, or time passed its end."""
    if new is None:
        return now >= old.end
    return new.start != old.start
