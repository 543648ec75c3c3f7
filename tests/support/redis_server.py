"""A private redis-server for tests that stop and restart it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO, Self

from streamproc.tools.net import wait_port
from streamproc.tools.processes import spawn_child


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
