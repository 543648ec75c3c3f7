"""Child processes that cannot outlive the process that started them (demo, bench, tests)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO

__all__ = ["spawn_child"]

_PR_SET_DEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before fork: the child between fork and exec must not import or allocate much.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_DEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
            os._exit(1)

    return preexec


def spawn_child(
    argv: Sequence[str], output: IO[bytes] | int, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process that cannot outlive this one.

    The child gets its own process group (a Ctrl-C aimed at us does not reach it half-way
    through our own shutdown) and, on Linux, a parent-death signal. That signal follows the
    *thread* that forks, so call this from a long-lived thread (main or event-loop thread).
    """
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        env=None if env is None else dict(env),
        process_group=0,
        preexec_fn=_die_with_parent(),  # fork-safe: no imports, no locks
    )
