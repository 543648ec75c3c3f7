"""A private redis-server for tests that stop and restart it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO, Self

from streamproc.tools.net import wait_port
from streamproc.tools.processes import spawn_child
from tests.support.tls import Pair


class RedisServer:
    """A private ``redis-server`` on its own port, without persistence: stop() loses data.

    With ``tls`` (the server's certificate and key) it speaks only TLS on ``port``; with
    ``password`` the ``default`` user needs it."""

    def __init__(
        self, port: int, workdir: Path, *, tls: Pair | None = None, password: str | None = None
    ) -> None:
        self.port = port
        self.workdir = workdir
        self.tls = tls
        self.password = password
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            args = ["--port", str(self.port)]
        else:
            args = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
        return args + (["--requirepass", self.password] if self.password else [])

    def start(self) -> Self:
        if self._proc is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = (self.workdir / "redis.log").open("ab")
        argv = ["redis-server", *self._listen_args(), "--bind", "127.0.0.1"]
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
