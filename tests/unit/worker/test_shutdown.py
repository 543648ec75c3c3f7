"""A SIGTERM: the worker leaves its group before its sinks' last flush, not after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.worker import topology as topology_module
from streamproc.worker.topology import Topology


class _Sink:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    async def stop(self) -> None:
        self.steps.append("sink stopped")


async def test_the_group_is_left_before_the_sinks_stop_and_after_the_state_is_changelogged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    topology.ready = True
    steps: list[str] = []

    async def leave(app: object) -> None:
        assert app is topology.app
        steps.append(f"left, ready={topology.ready}")

    monkeypatch.setattr(topology_module, "leave_group", leave)
    topology.sinks = [_Sink(steps)]  # type: ignore[list-item]
    # An alert round in flight (its changelog write not done yet) holds the state lock.
    await topology.state_lock.reader.acquire()
    shutting_down = asyncio.create_task(topology._shutting_down(topology.app))
    await asyncio.sleep(0.05)
    assert steps == [], "the group was left before the round's changelog write"
    topology.state_lock.reader.release()
    await asyncio.wait_for(shutting_down, 1)
    assert steps == ["left, ready=False", "sink stopped"]
