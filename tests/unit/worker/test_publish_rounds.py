"""A recovered worker serves the partials it holds at once, not after its first round."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.worker.topology import Topology


async def test_the_partials_held_are_served_once_ready_before_any_publish_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart holds the partials table it had (its data dir): the first round's full
    publish of every summary took 2.4 s at 10,000 leads, and the view was refreshed only
    after it, so the worker answered /readyz serving nothing."""
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    refreshed: list[tuple[object, bool]] = []

    def refresh(table: object, owned: set[int]) -> Iterator[None]:
        refreshed.append((table, topology.ready))
        yield None

    monkeypatch.setattr(topology.rounds.view, "refresh", refresh)
    await topology._on_recovered()
    assert refreshed == [(topology.partials.store, False)], "not refreshed before ready"
    assert topology.ready
