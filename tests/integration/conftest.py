"""Fixtures that start real workers (subprocesses) on the session broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.kafka.topics import create_topics

from .harness import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def make_topics() -> Callable[[Settings], None]:
    """Create every topic of these settings (what ``streamproc topics create`` does)."""

    def make(settings: Settings) -> None:
        asyncio.run(create_topics(settings))

    return make


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start(settings, name=None, ready=True)``: a worker process, stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(settings: Settings, name: str | None = None, ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path, name or f"worker-{len(workers) + 1}").start()
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=10)
