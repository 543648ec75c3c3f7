"""Every Kafka client the project creates gets the security settings, and only
``streamproc.kafka.clients`` creates them (Faust's own from the same settings)."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streamproc.config import Settings
from streamproc.kafka import clients, topics
from streamproc.kafka.app import create_app
from streamproc.kafka.producer import EventProducer
from streamproc.kafka.security import describe, explain
from streamproc.kafka.targets import TargetsReader
from streamproc.tools.targets import delete_target, list_targets, plausible_targets, publish_targets
from tests.support.tls import Certs, make_certs

ROOT = Path(__file__).resolve().parents[3]
CLIENT_CLASSES = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
PASSWORD = "s3cret-pa55word-xyz"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def sasl_ssl(certs: Certs, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        broker_url="kafka://broker-1.example:9093;broker-2.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="alice",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=certs.ca,
        kafka_ssl_certfile=certs.client.cert,
        kafka_ssl_keyfile=certs.client.key,
    )


def _assert_secured(options: dict[str, Any], certs: Certs) -> None:
    """aiokafka's view of one client: what it will send to the broker."""
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "alice"
    assert options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    subjects = [dict(item[0] for item in ca["subject"]) for ca in context.get_ca_certs()]
    assert {"commonName": "test-ca"} in subjects  # the CA file, not only the system's


def _client_options(client: Any) -> dict[str, Any]:
    return {
        "security_protocol": client._security_protocol,
        "sasl_mechanism": client._sasl_mechanism,
        "sasl_plain_username": client._sasl_plain_username,
        "sasl_plain_password": client._sasl_plain_password,
        "ssl_context": client._ssl_context,
    }


async def test_producer_consumer_and_admin_get_the_settings(
    sasl_ssl: Settings, certs: Certs
) -> None:
    producer = clients.producer(sasl_ssl, client_id="p")
    consumer = clients.consumer(sasl_ssl, "t", group_id=None)
    admin = clients.admin_client(sasl_ssl)
    for client in (producer.client, consumer._client, admin._client):
        _assert_secured(_client_options(client), certs)
        assert client._bootstrap_servers == "broker-1.example:9093,broker-2.example:9093"
    await producer.stop()
    await consumer.stop()
    await admin.close()


class _Started(Exception):
    """Raised by a client's start() in place of connecting: the client is caught there."""


async def test_the_commands_clients_get_the_settings(
    sasl_ssl: Settings, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every client the commands and the worker's readers start, caught as it starts: the
    event producer (simulate, replay), the admin client (topics create, the worker's
    checks), the targets' producer and readers (``streamproc targets``, the worker)."""
    started: list[Any] = []

    async def catch(client: Any) -> None:
        started.append(client)
        raise _Started

    async def nothing(*args: Any) -> None:
        return None

    monkeypatch.setattr(clients, "check_connection", nothing)
    for cls in (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient):
        monkeypatch.setattr(cls, "start", catch)
    target = plausible_targets(["rep-1"], 1.0)[0]
    starts = {
        "event producer": EventProducer(sasl_ssl).start(),
        "admin": topics.create_topics(sasl_ssl),
        "targets producer": publish_targets(sasl_ssl, [target]),
        "targets tombstone": delete_target(sasl_ssl, *target[:3]),
        "targets list": list_targets(sasl_ssl),
        "worker's targets reader": TargetsReader(sasl_ssl, "t")._follow(),
    }
    for name, start in starts.items():
        with pytest.raises(_Started):
            await start
        client = started[-1]
        inner = getattr(client, "client", None) or client._client
        _assert_secured(_client_options(inner), certs)
        assert len(started) == list(starts).index(name) + 1, name
        stop = getattr(client, "stop", None) or client.close
        await stop()


async def test_faust_s_consumer_and_producer_get_the_settings(
    sasl_ssl: Settings, certs: Certs
) -> None:
    app = create_app(sasl_ssl)
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    _assert_secured(_client_options(consumer._client), certs)
    _assert_secured(dict(app.producer._settings_auth()), certs)
    conf = app.conf
    _assert_secured(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context), certs)
    assert PASSWORD not in repr(conf.broker_credentials)


async def test_plaintext_by_default(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    producer = clients.producer(settings)
    assert producer.client._security_protocol == "PLAINTEXT"
    assert producer.client._ssl_context is None
    assert create_app(settings).conf.broker_credentials is None


async def test_tls_without_sasl(certs: Certs, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        kafka_security_protocol="SSL",
        kafka_ssl_check_hostname=False,
    )
    options = _client_options(clients.consumer(settings)._client)
    assert options["security_protocol"] == "SSL"
    assert options["sasl_plain_password"] is None
    assert options["ssl_context"].check_hostname is False
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # still verifies the CA
    app = create_app(settings)
    assert dict(app.producer._settings_auth())["security_protocol"] == "SSL"


def test_the_password_is_in_no_description_or_error(sasl_ssl: Settings) -> None:
    assert PASSWORD not in repr(sasl_ssl)
    assert PASSWORD not in str(sasl_ssl.model_dump())
    assert describe(sasl_ssl) == (
        f"SASL_SSL (SCRAM-SHA-512 as alice), CA file {sasl_ssl.kafka_ssl_cafile}, "
        f"client certificate {sasl_ssl.kafka_ssl_certfile}"
    )
    refused = explain(sasl_ssl, "b:9093", RuntimeError("SaslAuthenticationFailed: bad"), False)
    assert refused is not None
    assert "STREAMPROC_KAFKA_SASL_PASSWORD" in refused and PASSWORD not in refused


def _creations(path: Path) -> list[str]:
    """``AIOKafkaProducer(...)``-like calls and imports of the client classes in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in CLIENT_CLASSES or name == "create_conn":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {name}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in CLIENT_CLASSES or alias.name == "create_conn":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}")
    return found


def test_only_the_clients_module_creates_aiokafka_clients() -> None:
    """A client created elsewhere would miss the TLS and SASL settings. Three modules import
    a client class for type hints only."""
    allowed = {ROOT / "streamproc" / "kafka" / "clients.py"}
    files = [*(ROOT / "streamproc").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    assert len(files) > 50
    found = [hit for path in files if path not in allowed for hit in _creations(path)]
    hints = {
        "streamproc/kafka/topics.py",
        "streamproc/kafka/producer.py",
        "streamproc/kafka/targets.py",
    }
    assert [hit for hit in found if " calls " in hit] == []
    assert [hit for hit in found if " imports " in hit and hit.split(":")[0] not in hints] == []


def _caused(outer: Exception, cause: Exception) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (
            ssl.SSLCertVerificationError(
                "certificate verify failed: Hostname mismatch, certificate is not valid for 'b'"
            ),
            "STREAMPROC_KAFKA_SSL_CHECK_HOSTNAME=false",
        ),
        (
            ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate"),
            "not signed by a CA in STREAMPROC_KAFKA_SSL_CAFILE",
        ),
        (
            _caused(
                KafkaConnectionError("Connection at b:9093 closed"),
                ssl.SSLError(1, "[SSL] tlsv13 alert certificate required (_ssl.c:2580)"),
            ),
            "asks for a client certificate (mutual TLS): set STREAMPROC_KAFKA_SSL_CERTFILE",
        ),
        (
            ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate"),
            "refused the client certificate STREAMPROC_KAFKA_SSL_CERTFILE",
        ),
        (UnsupportedSaslMechanismError("conn"), "STREAMPROC_KAFKA_SASL_MECHANISM"),
        (
            SaslAuthenticationFailed("Authentication failed: Invalid credentials"),
            "refused the SASL login of 'alice' (SCRAM-SHA-512): check "
            "STREAMPROC_KAFKA_SASL_USERNAME and STREAMPROC_KAFKA_SASL_PASSWORD",
        ),
        (ConnectionRefusedError(111, "Connect call failed"), None),
        (KafkaConnectionError("Connection at b:9093 closed"), None),
    ],
)
def test_failures_no_retry_cures_are_one_line_naming_the_setting(
    sasl_ssl: Settings, error: Exception, says: str | None
) -> None:
    line = explain(sasl_ssl, "b:9093", error, False)
    if says is None:
        assert line is None  # down or slow: the caller retries
        return
    assert line is not None and says in line and "b:9093" in line and "\n" not in line
    assert PASSWORD not in line


def test_a_protocol_mismatch_names_the_protocol_to_set(sasl_ssl: Settings, tmp_path: Path) -> None:
    line = explain(sasl_ssl, "b:9093", TimeoutError(), True)
    assert line == (
        "broker b:9093 speaks plaintext but STREAMPROC_KAFKA_SECURITY_PROTOCOL=SASL_SSL: "
        "set it to PLAINTEXT or SASL_PLAINTEXT"
    )
    plain = Settings(_env_file=None, data_dir=tmp_path)
    assert explain(plain, "b:9093", OSError(), True) == (
        "broker b:9093 speaks TLS but STREAMPROC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT: "
        "set it to SSL or SASL_SSL"
    )
