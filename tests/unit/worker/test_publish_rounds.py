"""The partials' view: served at once after a recovery, and refreshed as partials arrive."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from faust.types import TP, Message

from streamproc.config import Settings
from streamproc.partials.codec import message_key
from streamproc.worker.partials import ARRIVAL_REFRESH_SECONDS
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


async def test_partials_applied_are_served_without_waiting_for_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round refreshed the view right after sending, before its own partials came back
    through the topic: each change waited a whole round more to reach /metrics."""
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    topology.ready = True
    refreshed: list[set[bytes]] = []

    def refresh(table: dict[bytes, bytes], owned: set[int]) -> Iterator[None]:
        refreshed.append(set(table))
        yield None

    async def written(records: object) -> None:
        return None

    monkeypatch.setattr(topology.rounds.view, "refresh", refresh)
    monkeypatch.setattr(topology.partials.log, "write", written)
    monkeypatch.setattr(topology.app.assignor, "assigned_actives", lambda: {_partials_tp(topology)})
    follower = asyncio.create_task(topology.rounds.refresh_on_arrival())
    try:
        key = message_key("rep:r1", 0)
        await topology.partials.apply([_message(topology, key, b"summary")])
        for _ in range(50):
            if refreshed:
                break
            await asyncio.sleep(0.01)
        assert refreshed == [{key}], "not refreshed on arrival"
        await topology.partials.apply([_message(topology, key, b"summary")])  # nothing new
        await asyncio.sleep(2 * ARRIVAL_REFRESH_SECONDS)
        assert len(refreshed) == 1, "refreshed again for partials the table already had"
    finally:
        follower.cancel()


def _partials_tp(topology: Topology) -> TP:
    return TP(topology.names.partials, 0)


def _message(topology: Topology, key: bytes, value: bytes) -> Message:
    message = Message(topology.names.partials, 0, 0, 0.0, 0, None, key, value, None)
    message.generation_id = topology.app.consumer_generation_id
    return message
