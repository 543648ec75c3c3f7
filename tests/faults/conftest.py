"""Fault-injection scenarios on real processes: fixtures, the soak opt-in and a figures report.

``pytest -m fault`` runs the suite (CI runs it too, within its time budget); the ``soak``
test runs only when asked for (``pytest -m soak``, length in minutes from ``SOAK_MINUTES``).
Every test records what it measured in the ``figures`` fixture; the figures are printed at
the end of the run and, with ``FAULT_FIGURES=path``, written there as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamproc.config import Settings

# The integration fixture that creates topics serves the fault tests as it is.
from tests.integration.conftest import make_topics
from tests.integration.harness import WorkerProcess

from .support import stop_all

__all__ = ["figures", "make_topics", "worker_factory"]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``start(settings, name=None, ready=True)``, as in the integration tests, but the
    workers still running at teardown are stopped all at once (seconds saved per test)."""
    workers: list[WorkerProcess] = []

    def start(settings: Settings, name: str | None = None, ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path, name or f"worker-{len(workers) + 1}").start()
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    stop_all(workers)
    for worker in workers:
        worker.stop(timeout=10)  # closes the log; the process has exited by now


_FIGURES: list[dict[str, Any]] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak test takes half an hour: only an explicit ``-m soak`` selects it."""
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="soak test: run it with `pytest -m soak` (SOAK_MINUTES=30)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with what it measured; reported at the end of the session."""
    record: dict[str, Any] = {}
    yield record
    if record:
        _FIGURES.append({"test": request.node.name, **record})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("fault figures")
    for entry in _FIGURES:
        terminalreporter.write_line(json.dumps(entry, default=str))
    path = os.environ.get("FAULT_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            for entry in _FIGURES:
                out.write(json.dumps(entry, default=str) + "\n")
