"""What the contender modules share: their command line and the status file the bench reads.

Each contender is a standalone process started by the bench (``python -m benchmarks``), as
``python -m benchmarks.contenders.NAME`` from the checkout's root. It reads the four
input topics from the start and writes a small JSON status file (count, time of the first
event, of the last one, of the ``--expect``-th one) that the bench polls; it never decides
when to stop: the bench stops it once the count is reached or the time bound has passed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

__all__ = ["Status", "parse_args"]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--broker", required=True, help="host:port")
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--app-id", required=True, help="consumer group / Faust app id")
    parser.add_argument("--expect", type=int, required=True, help="events to count")
    parser.add_argument("--status", required=True, help="JSON status file to write")
    parser.add_argument("--datadir", default="bench-data")
    args = parser.parse_args()
    args.topics = [t for t in args.topics.split(",") if t]
    return args


class Status:
    """Counts events; ``write()`` replaces the status file atomically."""

    __slots__ = ("count", "done_at", "expect", "first_at", "path")

    def __init__(self, path: str, expect: int) -> None:
        self.path = Path(path)
        self.expect = expect
        self.count = 0
        self.first_at: float | None = None
        self.done_at: float | None = None

    def begin(self) -> None:
        """The first event (or batch) has arrived: the clock starts before it is handled."""
        if self.first_at is None:
            self.first_at = time.time()

    def add(self, n: int = 1) -> None:
        """Count ``n`` events just handled (their handling is finished)."""
        self.count += n
        if self.done_at is None and self.count >= self.expect:
            self.done_at = time.time()
            self.write()

    def write(self) -> None:
        data = {
            "pid": os.getpid(),
            "count": self.count,
            "first_at": self.first_at,
            "last_at": time.time(),
            "done_at": self.done_at,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)
