"""The only place that creates aiokafka clients: each gets the broker and the security
settings (``kafka.security``), so a TLS or SASL cluster works for every command at once. A
unit test checks that no other module of the package or of the benchmarks calls an
aiokafka client class.

Starting one first connects once the way it will (``check_connection``): a setting that
cannot work stops it with one line naming the setting and the broker. Faust creates its
own consumer and producer from ``broker_credentials``, which ``kafka.app`` sets from the
same settings (the worker's start-up check has connected by then).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn

from streamproc.config import Settings
from streamproc.exceptions import BrokerError
from streamproc.kafka.security import aiokafka_options, explain, kafka_tls_context

__all__ = ["Assigned", "admin_client", "assigned", "check_connection", "consumer", "producer"]

# Under wait_for_broker's 5 s per attempt, with the probe of the other protocol after it.
PROBE_SECONDS = 2.0


def _options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    return {"bootstrap_servers": settings.broker_hosts, **aiokafka_options(settings), **options}


class _Checked:
    """``start()`` first connects once the way the client will (``check_connection``): a
    certificate, password or protocol that cannot work is one line naming the setting,
    not aiokafka's bootstrap errors and a traceback."""

    def _check_first(self, settings: Settings) -> None:
        self._checked_settings = settings

    async def start(self) -> None:
        await check_connection(self._checked_settings)
        await super().start()  # type: ignore[misc]  # the aiokafka class's


class _Producer(_Checked, AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
    pass


class _Consumer(_Checked, AIOKafkaConsumer):  # type: ignore[misc]
    pass


class _Admin(_Checked, AIOKafkaAdminClient):  # type: ignore[misc]
    pass


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An ``AIOKafkaProducer`` (not started) with ``options`` on top of the settings'."""
    client = _Producer(**_options(settings, options))
    client._check_first(settings)
    return client


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An ``AIOKafkaConsumer`` (not started) of ``topics`` (none: assign partitions later)."""
    client = _Consumer(*topics, **_options(settings, options))
    client._check_first(settings)
    return client


@dataclass(frozen=True)
class Assigned:
    """A started consumer assigned some partitions of one topic, with where each begins
    and ends on the broker."""

    consumer: AIOKafkaConsumer
    partitions: dict[int, TopicPartition]
    firsts: dict[TopicPartition, int]
    ends: dict[TopicPartition, int]


@asynccontextmanager
async def assigned(
    settings: Settings, topic: str, partitions: Iterable[int], fetch_bytes: int
) -> AsyncIterator[Assigned]:
    """A consumer of ``topic``'s ``partitions``, assigned (no group: nothing waits for a
    join, no group is disturbed), fetching at most ``fetch_bytes`` a partition. Each
    partition is paused: the caller seeks it, then resumes it (aiokafka would fetch it from
    its first offset meanwhile: a year's take-over fetched 2 MiB of each changelog partition
    and 1.3 MiB of each snapshot partition that way, for nothing)."""
    client = consumer(
        settings,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=fetch_bytes,
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_wait_ms=50,
    )
    await client.start()
    try:
        tps = {p: TopicPartition(topic, p) for p in partitions}
        client.assign(list(tps.values()))
        client.pause(*tps.values())  # before any await: the fetcher runs at the next one
        firsts = await client.beginning_offsets(list(tps.values()))
        ends = await client.end_offsets(list(tps.values()))
        yield Assigned(client, tps, firsts, ends)
    finally:
        await client.stop()


def admin_client(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An ``AIOKafkaAdminClient`` (not started)."""
    client = _Admin(**_options(settings, options))
    client._check_first(settings)
    return client


async def check_connection(settings: Settings) -> None:
    """Connect to a bootstrap broker the way every client does (TLS, SASL login): returns at
    the first that takes the connection.

    If none does: raises ``BrokerError`` with one line naming the setting to change when
    no retry can help (a certificate, a password, a protocol mismatch, judged on the first
    broker); re-raises the first broker's failure otherwise (down or slow: the caller
    retries)."""
    options = aiokafka_options(settings)
    failures: list[tuple[str, Exception]] = []
    for broker in settings.broker_hosts.split(","):
        host, _, port = broker.rpartition(":")
        try:
            await _connect(host, int(port), options)
            return
        except Exception as exc:
            failures.append((broker, exc))
    broker, first = failures[0]
    host, _, port = broker.rpartition(":")
    other_side = await _speaks_other_protocol(settings, host, int(port), first)
    alert = await _tls_alert(settings, host, int(port), first)
    message = explain(settings, broker, alert or first, other_side)
    if message is not None:
        raise BrokerError(message) from None
    raise first


async def _connect(host: str, port: int, options: dict[str, Any]) -> None:
    timeout_ms = int(PROBE_SECONDS * 1000)
    async with asyncio.timeout(PROBE_SECONDS):
        conn = await create_conn(
            host, port, client_id="streamproc-check", request_timeout_ms=timeout_ms, **options
        )
    conn.close()


async def _speaks_other_protocol(
    settings: Settings, host: str, port: int, exc: BaseException
) -> bool:
    """Whether the broker answers with the protocol the settings do not use: a TLS
    handshake where they say plaintext (the connection was closed), or plaintext Kafka
    where they say TLS (the handshake got no answer)."""
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        try:
            await _connect(host, port, {"security_protocol": "PLAINTEXT"})
        except Exception:
            return False
        return True
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # only asks whether TLS answers at all
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            _, writer = await asyncio.open_connection(host, port, ssl=unverified)
    except Exception:
        return False
    writer.close()
    return True


async def _tls_alert(
    settings: Settings, host: str, port: int, exc: BaseException
) -> ssl.SSLError | None:
    """The TLS alert a broker sends after the handshake when it refuses the client
    certificate (or its absence), read without sending anything: the Kafka request of the
    first attempt can make the broker reset the connection before the alert is read."""
    context = kafka_tls_context(settings)
    if context is None or isinstance(exc, ssl.SSLError):
        return None
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except Exception:
        return None
    try:
        async with asyncio.timeout(0.5):  # an alert comes at once; a broker that took the
            await reader.read(1)  # certificate sends nothing until asked
    except ssl.SSLError as alert:
        return alert
    except Exception:
        return None
    finally:
        writer.close()
    return None
