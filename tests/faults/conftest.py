"""Fault-injection scenarios on real processes: the soak opt-in and a figures report.

``pytest -m fault`` runs the suite (CI runs it too, within its time budget); the ``soak``
test runs only when asked for (``pytest -m soak``, length in minutes from ``SOAK_MINUTES``).
Every test records what it measured in the ``figures`` fixture; the figures are printed at
the end of the run and, with ``FAULT_FIGURES=path``, written there as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

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
