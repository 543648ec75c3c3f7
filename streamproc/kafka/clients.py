"""The only place that creates aiokafka clients: each gets the broker and the security
settings (``kafka.security``), so a TLS or SASL cluster works for every command at once.

Faust creates its own consumer and producer from ``broker_credentials``, which
``kafka.app`` sets from the same settings. A unit test checks that no other module of the
package or of the benchmarks calls an aiokafka client class.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn

from streamproc.config import Settings
from streamproc.exceptions import BrokerError
from streamproc.kafka.security import aiokafka_options, explain, kafka_tls_context

__all__ = ["admin_client", "check_connection", "consumer", "producer"]

# Under wait_for_broker's 5 s per attempt, with the probe of the other protocol after it.
PROBE_SECONDS = 2.0


def _options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    return {"bootstrap_servers": settings.broker_hosts, **aiokafka_options(settings), **options}


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An ``AIOKafkaProducer`` (not started) with ``options`` on top of the settings'."""
    return AIOKafkaProducer(**_options(settings, options))


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An ``AIOKafkaConsumer`` (not started) of ``topics`` (none: assign partitions later)."""
    return AIOKafkaConsumer(*topics, **_options(settings, options))


def admin_client(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An ``AIOKafkaAdminClient`` (not started)."""
    return AIOKafkaAdminClient(**_options(settings, options))


async def check_connection(settings: Settings) -> None:
    """Connect to the first bootstrap broker the way every client does (TLS, SASL login).

    Raises ``BrokerError`` with one line naming the setting to change when no retry can
    help (a certificate, a password, a protocol mismatch); re-raises any other failure (a
    broker down or slow: the caller retries)."""
    broker = settings.broker_hosts.split(",")[0]
    host, _, port = broker.rpartition(":")
    try:
        await _connect(host, int(port), aiokafka_options(settings))
    except Exception as exc:
        other_side = await _speaks_other_protocol(settings, host, int(port), exc)
        alert = await _tls_alert(settings, host, int(port), exc)
        message = explain(settings, broker, alert or exc, other_side)
        if message is not None:
            raise BrokerError(message) from None
        raise


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
