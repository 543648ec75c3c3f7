"""A private redis-server for tests that stop and restart it."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from tests.support.servers import ServerProcess
from tests.support.tls import Pair


class RedisServer(ServerProcess):
    """A private ``redis-server`` on its own port, without persistence: stop() loses data.

    With ``tls`` (the server's certificate and key) it speaks only TLS on ``port``; with
    ``password`` the ``default`` user needs it."""

    name = "redis-server"

    def __init__(
        self, port: int, workdir: Path, *, tls: Pair | None = None, password: str | None = None
    ) -> None:
        super().__init__(port, workdir)
        self.tls = tls
        self.password = password

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
        argv = ["redis-server", *self._listen_args(), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self._spawn(argv)
        return self
