"""Creates the Faust app with the settings that make it fast to join and safe to rebalance,
and types what the worker uses of it where Faust's own types fall short."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

import faust
from faust.tables import TableManager

from streamproc.config import Settings
from streamproc.kafka.assignor import install as install_assignor
from streamproc.kafka.security import faust_credentials
from streamproc.kafka.transport import install as install_transport

__all__ = ["Table", "connect", "create_app", "leave_group", "store_of", "take_events"]

Table: TypeAlias = "faust.types.TableT[bytes, bytes]"
"""A table of raw bytes: the worker serializes its own values."""


class _Topic(faust.Topic):
    """Faust's topic, minus an ERROR traceback on every shutdown and on every failed send.

    A send still in flight when the worker stops has its future cancelled; Faust's
    ``_on_published`` catches ``Exception``, which ``CancelledError`` is not since Python
    3.8, so asyncio logged ``Exception in callback Topic._on_published`` with a traceback.
    The send is cut short by the shutdown: its message is cancelled too, quietly (what it
    carried is replayed from the committed offsets, as after any stop).
    """

    def _on_published(self, fut: Any, message: Any, producer: Any, state: Any) -> None:
        if fut.cancelled():
            message.cancel()
            return
        super()._on_published(fut, message=message, producer=producer, state=state)
        if message.done() and not message.cancelled():
            # A failed send: Faust logged it (a WARNING) and the caller awaits ``send``'s
            # own future; this one nobody awaits, and asyncio logged it again at its
            # collection as an ERROR with a traceback ("FutureMessage exception was never
            # retrieved": every metric message refused by the membership lease).
            message.exception()


class _Tables(TableManager):
    """Faust's table manager, minus the second it sleeps when it starts.

    Faust's ``on_start`` sleeps 1 s before it starts the tables and lets the consumer
    subscribe (room for tables declared late); the worker declares all of its tables
    before the app starts (``worker.topology``), so that second was only a wait on the
    way to the group join: 1.0 s of every start, a restart's 9.6 s at 100,000 leads
    included."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def create_app(settings: Settings, **web: Any) -> faust.App:
    """The worker's Faust app; ``web``: more ``faust.App`` settings of its web server (TLS,
    middlewares: ``serving.web_security``)."""
    install_transport(idempotent_producer=settings.producer_idempotence)
    install_assignor()
    # Other workers call this URL (/kpis fan-out): a wildcard bind is reached by host name.
    wildcard = settings.web_host in ("0.0.0.0", "::")
    host = socket.gethostname() if wildcard else settings.web_host
    scheme = "https" if settings.web_tls_certfile else "http"
    return faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        # Standby partitions go to the disk copy only (streamproc.state.store): a partition
        # that moves to a standby loads from its disk after reading the last few records.
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        # tansu (and small clusters) join in seconds with these instead of Faust's 60 s.
        broker_session_timeout=settings.session_timeout_seconds,
        # A member learns of a rebalance from a heartbeat's answer: a survivor rejoined
        # 0.56 s after the other member left (mean of 6, bare aiokafka on tansu) with 1 s
        # heartbeats, 0.32 s with 0.5 s; in the take-over bench's logs 0.12 - 0.36 s with
        # 0.5 s and 0.04 - 0.12 s with 0.25 s (a leave or a join), which left a SIGTERM
        # hand-over at 3.05 s (3.34 - 3.92 s with 0.5 s the same evening). tansu also
        # finds a SIGKILLed member's session over only when another member's request
        # comes. Four requests a second a worker.
        broker_heartbeat_interval=0.25,
        broker_rebalance_timeout=5,
        broker_request_timeout=30,
        # Commit often: less to replay after a crash (replays are idempotent anyway).
        broker_commit_interval=0.5,
        # aiokafka hands out everything it has prefetched in one getmany, each record then
        # an object (~140k of them, ~50 MiB, when a worker catches up a backlog); bounded,
        # the rest waits as the compact fetch response.
        broker_max_poll_records=settings.batch_size,
        producer_linger=0.005,
        # A changelog write is one batch per partition (streamproc.kafka.batch_send); aiokafka
        # sends one batch per partition at a time, so Faust's 16 KiB would make a write of
        # 2,000 leads (~1 KiB each) ~30 broker round trips one after the other.
        producer_max_batch_size=512 * 1024,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=host,
        canonical_url=f"{scheme}://{host}:{settings.web_port}",
        web_in_thread=False,
        topic_allow_declare=True,
        Topic=_Topic,
        TableManager=_Tables,
        **web,
    )


def store_of(table: Table) -> MutableMapping[Any, Any]:
    """The dict a memory-store table keeps its keys in: the worker reads and fills it
    itself (decoded leads, partials), changelogging what it writes."""
    return table.data.data  # type: ignore[attr-defined, no-any-return]  # not on TableT


async def leave_group(app: faust.App) -> None:
    """Commit what was acked and leave the consumer group (the consumer stops: its
    ``on_stop`` waits for the messages in hand and commits, then aiokafka's ``stop`` sends
    LeaveGroup). Faust's own stop of the consumer later does nothing more."""
    await app.consumer.stop()


def connect(signal: Any, handler: Callable[..., Awaitable[None]]) -> None:
    """``signal.connect(handler)``: mode types handlers with ``mypy_extensions.VarArg``,
    which no function satisfies, so the signal is taken as Any here."""
    signal.connect(handler)


def take_events(
    stream: faust.StreamT[Any], size: int, within: float
) -> AsyncIterator[list[faust.EventT[Any]]]:
    """``stream.take_events``: an agent gets a ``Stream``, whose ``StreamT`` type lacks it."""
    return stream.take_events(size, within=within)  # type: ignore[attr-defined, no-any-return]
