"""Produces events to Kafka: an orjson-encoding AIOKafkaProducer and the real-time simulation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from streamproc.config import Settings
from streamproc.simulate import SalesTeam

__all__ = ["EventProducer", "run_simulation"]

log = logging.getLogger(__name__)


class EventProducer:
    """Sends events to their topics, keyed by ``lead_id`` so each lead keeps one partition.

    ``send`` only enqueues (aiokafka batches for ``linger_ms``) and returns the delivery future;
    ``flush`` waits for everything enqueued. A failed delivery is counted in ``failed`` and
    logged once per error type, since callers rarely await each future.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        linger_ms: int = 10,
        client_id: str = "streamproc-producer",
        **options: Any,
    ) -> None:
        self._settings = settings
        self._topics: dict[str, str] = {}
        self._options = {
            "bootstrap_servers": settings.broker_hosts,
            "client_id": client_id,
            "linger_ms": linger_ms,
            "acks": "all",
            "max_batch_size": 256 * 1024,  # events are ~250 bytes: fill batches at high rates
            **options,
        }
        self._producer: AIOKafkaProducer | None = None
        self._seen_errors: set[type[BaseException]] = set()
        self.sent = 0
        self.failed = 0

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is pending, then close the connections."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # stop() flushes first

    async def flush(self) -> None:
        await self._started().flush()

    async def send(self, kind: str, event: dict[str, Any]) -> asyncio.Future[Any]:
        """Enqueue one event of ``kind`` (e.g. ``"lead-created"``) on its topic."""
        topic = self._topics.get(kind)
        if topic is None:
            topic = self._topics[kind] = self._settings.topic(kind)
        return await self.send_raw(topic, event["lead_id"], orjson.dumps(event))

    async def send_raw(
        self, topic: str, key: str | bytes | None, value: bytes | None
    ) -> asyncio.Future[Any]:
        """Enqueue any bytes: for replays and for tests of bad input."""
        if isinstance(key, str):
            key = key.encode()
        future: asyncio.Future[Any] = await self._started().send(topic, value=value, key=key)
        future.add_done_callback(self._delivered)
        return future

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.sent += 1
            return
        self.failed += 1
        if type(error) not in self._seen_errors:
            self._seen_errors.add(type(error))
            log.error(
                "event delivery failed (further %s not logged): %s", type(error).__name__, error
            )

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventProducer is not started: use start() or 'async with'")
        return self._producer

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def run_simulation(
    settings: Settings,
    rate: float,
    reps: int = 8,
    seed: int = 0,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    *,
    producer: EventProducer | None = None,
    step: float = 0.05,
    log_every: float = 10.0,
    scramble: bool = False,
) -> int:
    """Send a simulated team's events as they happen, until ``duration`` or ``stop``.

    Each ``step`` seconds, the events whose ``occurred_at`` has passed are sent (event time is
    the wall clock). Returns the number of events sent. A given ``producer`` must be started
    by the caller and is left running.
    """
    # Drawing the team pre-fills its pipeline (up to a second or two): not on the event loop.
    team = await asyncio.to_thread(
        SalesTeam.for_rate, settings, rate, reps, seed, start=time.time(), scramble=scramble
    )
    log.info(
        "simulating %d reps at %.1f events/s (%.2f leads/s, pace %.0f) to %s",
        reps,
        rate,
        team.lead_rate,
        team.pace,
        settings.broker_hosts,
    )
    if producer is not None:
        return await _produce(team, producer, duration, stop, step, log_every)
    async with EventProducer(settings) as own:
        return await _produce(team, own, duration, stop, step, log_every)


async def _produce(
    team: SalesTeam,
    producer: EventProducer,
    duration: float | None,
    stop: asyncio.Event | None,
    step: float,
    log_every: float,
) -> int:
    end = None if duration is None else team.start + duration
    cursor, count = team.start, 0
    next_log = time.monotonic() + log_every
    while True:
        now = time.time()
        upto = now if end is None else min(now, end)
        for kind, event in team.events_between(cursor, upto):
            await producer.send(kind, event)
            count += 1
        cursor = max(cursor, upto)
        if (end is not None and upto >= end) or (stop is not None and stop.is_set()):
            break
        if time.monotonic() >= next_log:
            next_log += log_every
            log.info("simulation: %d events sent (%.1f/s)", count, count / (now - team.start))
        await _pause(stop, step)
    await producer.flush()
    log.info("simulation done: %d events sent", count)
    return count


async def _pause(stop: asyncio.Event | None, seconds: float) -> None:
    """Sleep, but wake at once when ``stop`` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
