"""A server the tests run as a child process on a port of its own, its log in its work dir."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

from streamproc.tools.net import wait_port
from streamproc.tools.processes import spawn_child


class ServerProcess:
    """``_spawn`` starts the child and waits for its port; ``stop`` ends it and its log."""

    name = "server"

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path = workdir / f"{self.name}-{port}.log"

    def _spawn(self, argv: list[str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        self._proc = spawn_child(argv, self._log)
        wait_port("127.0.0.1", self.port, 10, check=self._check_alive)

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
            raise RuntimeError(f"{self.name} exited early; see {self._log_path}")
