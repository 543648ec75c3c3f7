"""The disk store's rebalance: every table's changelog caught up at once, not in turn."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.state.store import DiskStore, disk_stores
from streamproc.worker.topology import Topology


async def test_the_tables_catch_up_together_once_each_per_rebalance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    stores = disk_stores(topology.app)
    assert len(stores) >= 2
    running: list[str] = []
    most = 0
    caught_up: list[str] = []

    async def rebalance(store: DiskStore) -> None:
        nonlocal most
        running.append(store.table.name)
        most = max(most, len(running))
        await asyncio.sleep(0.05)  # the reader's round trips to the broker
        running.remove(store.table.name)
        caught_up.append(store.table.name)

    monkeypatch.setattr(DiskStore, "_rebalance", rebalance)
    for _ in range(2):  # two rebalances: each catches every table up once
        caught_up.clear()
        for table in topology.app.tables.values():  # as Faust's TableManager calls them
            await table.on_rebalance(set(), set(), set(), 1)
        assert sorted(caught_up) == sorted(s.table.name for s in stores)
    assert most == len(stores), "the tables were caught up one after the other"
