"""py-spy on a worker (``--profile``): start, stop, and where its samples went."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["start_profiler", "stop_profiler", "top_functions"]


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_profiler(
    pid: int, directory: Path, name: str = "worker"
) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` at 100 Hz without pausing it, into ``directory/NAME.folded``."""
    binary = _py_spy()
    if binary is None:
        sys.stderr.write("bench: py-spy not found (pip install py-spy): no profile\n")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    argv = [binary, "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
    argv += ["--format", "raw", "--output", str(directory / f"{name}.folded")]
    log = (directory / "py-spy.log").open("ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


_FRAME_LINE = re.compile(r":\d+\)$")


# The worker's entry point (``streamproc worker``): on every stack, so left out of ``ours``.
_ENTRY_FRAMES = (
    "(streamproc/cli.py)",
    "(streamproc/worker/run.py)",
    "(streamproc/__main__.py)",
)


def top_functions(folded: Path, limit: int = 20) -> dict[str, Any]:
    """Where a py-spy ``raw`` profile spends its samples, as shares of all samples.

    ``self``: the function on top of the stack; ``total``: anywhere on the stack (its
    callees included); ``ours``: ``total`` restricted to streamproc's own functions, the
    entry point (cli, worker/run) left out since it is on every stack.
    """
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [_FRAME_LINE.sub(")", f) for f in stack.split(";")]
        samples += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    if not samples:
        return {"samples": 0, "self": [], "total": [], "ours": []}
    ours = [
        (f, c)
        for f, c in total_counts.most_common()
        if "(streamproc/" in f and not f.endswith(_ENTRY_FRAMES)
    ]
    return {
        "samples": samples,
        "self": [(f, c / samples) for f, c in self_counts.most_common(limit)],
        "total": [(f, c / samples) for f, c in total_counts.most_common(limit * 3)],
        "ours": [(f, c / samples) for f, c in ours[:limit]],
    }
