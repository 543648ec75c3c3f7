"""Small socket helpers: a free local port, and waiting until a port accepts connections."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

__all__ = ["free_port", "port_open", "wait_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it; racy, but rarely lost)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether ``host:port`` accepts a TCP connection now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(
    host: str,
    port: int,
    timeout: float,
    *,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> None:
    """Block until ``host:port`` accepts connections, or raise ``TimeoutError``.

    ``check`` runs before every attempt; it raises to give up early (e.g. the server exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        if port_open(host, port):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:g}s")
        time.sleep(interval)
