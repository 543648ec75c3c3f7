"""Produces events to Kafka: an orjson-encoding AIOKafkaProducer, keyed by ``lead_id``."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streamproc.config import Settings
from streamproc.kafka import clients

__all__ = ["EventProducer"]

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
        producer = clients.producer(self._settings, **self._options)
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
        # a lead's events by lead, a customer's by customer (spec/business-events.md)
        key = event.get("lead_id") or event.get("customer_id") or event["event_id"]
        return await self.send_raw(topic, key, orjson.dumps(event))

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
