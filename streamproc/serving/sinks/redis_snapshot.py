"""Redis snapshot sink: the latest value of every owned series in ``streamproc:kpi:<metric>``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from prometheus_client import Gauge
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError

from streamproc.config import Settings
from streamproc.contract.outputs import series_key
from streamproc.kpis.catalogue import KPIS
from streamproc.kpis.compute import Sample
from streamproc.runtime.heap import json_to_keep
from streamproc.runtime.slices import run_in_slices
from streamproc.serving.sinks.base import Backoff, Outage, rfc3339, stop_task

__all__ = ["KEY_PREFIX", "Owns", "RedisSnapshotSink", "canonical_labels", "redis_security"]

log = logging.getLogger(__name__)

KEY_PREFIX = "streamproc:kpi:"
Owns = Callable[[str, dict[str, str]], bool]
"""``owns(metric, labels) -> bool``: whether this worker currently owns the series."""
Field = tuple[str, str]  # (hash key, field)
_ERRORS = (RedisError, OSError)  # OSError covers socket errors and TimeoutError


def canonical_labels(labels: dict[str, str]) -> str:
    """``rep="r1",window="1h"``: sorted, Prometheus-escaped; a series' hash field."""
    return series_key("", labels)[1:-1]


@dataclass(frozen=True, slots=True)
class _Row:
    """One series as it should be in Redis."""

    value: float
    window_start: float | None
    labels: dict[str, str]  # including window, as the field
    payload: bytes


def _row(sample: Sample, labels: dict[str, str], now: float) -> _Row:
    start = None if sample.window is None else sample.window.start
    body = {
        "value": sample.value,
        "window_start": None if start is None else rfc3339(start),
        "updated_at": rfc3339(now),
        "labels": labels,
    }
    return _Row(sample.value, start, labels, json_to_keep(body))


def _stored_labels(raw: bytes) -> dict[str, str] | None:
    """The labels in a stored value, or None when it is not one of ours."""
    try:
        labels = orjson.loads(raw).get("labels")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()):
        return labels
    return None


def redis_security(settings: Settings) -> dict[str, Any]:
    """redis-py's connection options for the credentials and TLS files of the settings (a
    ``rediss://`` URL turns TLS on; its CA is the system's unless a CA file is set)."""
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ssl_cafile is not None:
        options["ssl_ca_certs"] = str(settings.redis_ssl_cafile)
    if settings.redis_ssl_certfile is not None and settings.redis_ssl_keyfile is not None:
        options["ssl_certfile"] = str(settings.redis_ssl_certfile)
        options["ssl_keyfile"] = str(settings.redis_ssl_keyfile)
    return options


def _hint(exc: BaseException) -> str:
    """The settings to check for a failure that waiting will not cure."""
    text = str(exc).lower()
    if isinstance(exc, AuthenticationError) or "noauth" in text or "wrongpass" in text:
        return "check STREAMPROC_REDIS_USERNAME and STREAMPROC_REDIS_PASSWORD"
    if "certificate verify failed" in text:
        return "check STREAMPROC_REDIS_SSL_CAFILE (the CA that signed Redis' certificate)"
    if "wrong version number" in text or "record layer failure" in text:
        return "Redis does not speak TLS there: check rediss:// in STREAMPROC_REDIS_URL"
    return ""


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class RedisSnapshotSink:
    """Keeps ``<prefix><metric>`` hashes equal to the series this worker owns.

    Writes only changed fields (and deletes vanished owned ones) in pipelined batches. After
    an outage, and every ``resync_seconds`` anyway, it re-syncs the whole snapshot: every
    current series is written and every stored field whose series this worker owns but no
    longer has is deleted, so neither a Redis restart nor a rebalance leaves a stale value.
    """

    def __init__(
        self,
        settings: Settings,
        owns: Owns,
        redis_up_gauge: Gauge,
        *,
        key_prefix: str = KEY_PREFIX,
        socket_timeout: float = 1.0,
        resync_seconds: float = 30.0,
        batch_size: int = 500,
        stop_timeout: float = 2.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._url = settings.redis_url
        self._settings = settings
        self._owns = owns
        self._gauge = redis_up_gauge
        self._prefix = key_prefix
        self._timeout = socket_timeout
        self._resync = resync_seconds
        self._batch = batch_size
        self._stop_timeout = stop_timeout
        self._backoff = backoff or Backoff(0.5, 10.0)
        target = f"Redis {_safe_url(self._url)}" if self._url else "Redis"
        self._outage = Outage("redis", log, redis_up_gauge, target=target)
        self._client: aioredis.Redis | None = None
        self._latest: tuple[tuple[Sample, ...], float] | None = None
        self._wake = asyncio.Event()
        self._rows: dict[Field, _Row] | None = None  # None until the first snapshot
        self._written: dict[Field, _Row] = {}  # what Redis holds from us, as far as we know
        self._need_full = True  # at start and after an outage: Redis may be stale or empty
        self._next_full = 0.0  # monotonic time of the next periodic full re-sync
        self._alerts: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=1000)
        self._alerts_dropped = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def status(self) -> dict[str, Any]:
        """For /readyz details, e.g. ``{"redis": "down", "since": "...Z", "error": "..."}``."""
        if self._url is None:
            return {"redis": "disabled"}
        return self._outage.status()

    async def start(self) -> None:
        if self._url is None:
            self._gauge.set(1)  # the gauge reads 1 when Redis is disabled too
            return
        if self._tasks:
            return
        self._client = aioredis.Redis.from_url(
            self._url,
            **redis_security(self._settings),
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            # Our own loop retries with backoff; redis-py's retries would only delay that.
            retry=Retry(NoBackoff(), 0),
        )
        self._tasks = [
            asyncio.create_task(self._run(), name="redis-snapshot-sink"),
            asyncio.create_task(self._run_alerts(), name="redis-alerts"),
        ]

    async def publish(self, samples: Sequence[Sample], now: float) -> None:
        if self._url is None:
            return
        # Only the latest snapshot matters: a newer one replaces one not yet taken.
        self._latest = (tuple(samples), now)
        self._wake.set()

    async def publish_alert(self, channel: str, payload: bytes) -> None:
        """Best effort PUBLISH from the background: dropped while Redis is down."""
        if self._client is None or self._outage.down:
            self._alerts_dropped += 1
            return
        try:
            self._alerts.put_nowait((channel, payload))
        except asyncio.QueueFull:
            self._alerts_dropped += 1

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await stop_task(task)
        client, self._client = self._client, None
        if client is None:
            return
        if not self._outage.down:
            try:
                async with asyncio.timeout(self._stop_timeout):
                    await self._cycle(client)
            except Exception as exc:  # shutting down: report, never raise
                log.warning("Redis snapshot: last flush failed: %r", exc)
        await client.aclose()

    # --- background tasks ---------------------------------------------------------------

    async def _run(self) -> None:
        assert self._client is not None
        delay = 0.0
        failed = False
        while True:
            if failed:
                # Retry on the backoff schedule, not on every new snapshot.
                await asyncio.sleep(delay)
            else:
                await self._wait(max(0.0, self._next_full - time.monotonic()))
            try:
                await self._cycle(self._client)
            except _ERRORS as exc:
                self._outage.failed(exc, _hint(exc))
                self._need_full = True  # Redis may come back empty: re-sync everything
                delay, failed = self._backoff.next(), True
                continue
            except Exception:
                log.exception("Redis snapshot: unexpected error, retrying")
                delay, failed = self._backoff.next(), True
                continue
            failed = False
            self._backoff.reset()
            self._outage.ok()

    async def _wait(self, at_most: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._wake.wait()
        self._wake.clear()

    async def _cycle(self, client: aioredis.Redis) -> None:
        latest, self._latest = self._latest, None
        if latest is not None:
            await run_in_slices(self._fold(*latest))
        if self._rows is None:
            # Nothing computed yet: an empty snapshot would delete every owned field.
            await client.ping()
            self._next_full = time.monotonic() + self._resync
        elif self._need_full or time.monotonic() >= self._next_full:
            await self._full_sync(client, self._rows)
        else:
            await self._incremental(client, self._rows)

    def _fold(self, samples: tuple[Sample, ...], now: float) -> Generator[None, None, None]:
        """Adopt a snapshot, in steps (``slices``): ~20,000 series at 100 reps."""
        old = self._rows or {}
        rows: dict[Field, _Row] = {}
        for sample in samples:
            yield None
            if not math.isfinite(sample.value):  # JSON has no NaN
                continue
            labels = dict(sample.labels)
            if sample.window is not None:
                labels["window"] = sample.window.name
            field = (self._prefix + sample.metric, canonical_labels(labels))
            prev = old.get(field)
            start = None if sample.window is None else sample.window.start
            if prev is not None and (prev.value, prev.window_start) == (sample.value, start):
                rows[field] = prev  # unchanged: same object, same updated_at
            else:
                rows[field] = _row(sample, labels, now)
        self._rows = rows

    async def _incremental(self, client: aioredis.Redis, rows: dict[Field, _Row]) -> None:
        changed = [(f, row) for f, row in rows.items() if self._written.get(f) is not row]
        gone = [f for f in self._written if f not in rows]
        # A vanished series that another worker now owns is its business, not ours to delete.
        await self._hset(client, changed)
        await self._hdel(client, [f for f in gone if self._owns_field(f)])
        for f in gone:
            del self._written[f]

    def _owns_field(self, field: Field) -> bool:
        return self._owns(field[0].removeprefix(self._prefix), self._written[field].labels)

    async def _full_sync(self, client: aioredis.Redis, rows: dict[Field, _Row]) -> None:
        self._written = {}
        await self._hset(client, list(rows.items()))
        stale = [f async for f in self._stale(client, rows)]
        await self._hdel(client, stale)
        self._need_full = False
        self._next_full = time.monotonic() + self._resync
        if stale:
            log.info("Redis snapshot: deleted %d stale fields", len(stale))

    async def _stale(self, client: aioredis.Redis, rows: dict[Field, _Row]) -> AsyncIterator[Field]:
        """Stored fields of series this worker owns but no longer has."""
        for metric in KPIS:
            key = self._prefix + metric
            async for raw_field, raw in client.hscan_iter(key, count=self._batch):
                field = (key, raw_field.decode())
                if field in rows:
                    continue
                labels = _stored_labels(raw)
                if labels is not None and self._owns(metric, labels):
                    yield field

    async def _hset(self, client: aioredis.Redis, rows: list[tuple[Field, _Row]]) -> None:
        for i in range(0, len(rows), self._batch):
            chunk = rows[i : i + self._batch]
            pipe = client.pipeline(transaction=False)
            for (key, field), row in chunk:
                pipe.hset(key, field, row.payload)
            await pipe.execute()
            self._written.update(chunk)

    async def _hdel(self, client: aioredis.Redis, fields: list[Field]) -> None:
        for i in range(0, len(fields), self._batch):
            pipe = client.pipeline(transaction=False)
            for key, field in fields[i : i + self._batch]:
                pipe.hdel(key, field)
            await pipe.execute()

    async def _run_alerts(self) -> None:
        assert self._client is not None
        while True:
            channel, payload = await self._alerts.get()
            if self._alerts_dropped:
                log.info("Redis alerts: %d dropped while Redis was down", self._alerts_dropped)
                self._alerts_dropped = 0
            try:
                await self._client.publish(channel, payload)
            except _ERRORS as exc:
                self._alerts_dropped += 1
                self._outage.failed(exc, _hint(exc))
                self._need_full = True
