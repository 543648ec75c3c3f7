"""The disk store: every table's changelog caught up at once on a rebalance, not in turn;
the standbys' records applied to a caught-up copy only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.types import Message

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


def _record(partition: int, offset: int, key: bytes, value: bytes) -> Message:
    return Message("t", partition, offset, 1.0, 0, None, key, value, None)


def test_standby_records_reach_only_a_caught_up_partition_and_never_go_back(
    tmp_path: Path,
) -> None:
    """The standbys' records come a fetch at a time (``worker.standbys``). A partition not
    caught up is skipped: its mark moved past a hole would make a promotion trust a copy
    that lacks records."""
    stores = disk_stores(Topology(Settings(_env_file=None, data_dir=tmp_path)).app)
    store = next(s for s in stores if s.cache is None)  # the leads': ``test_lead_cache``
    store._held = {0}  # caught up by the raw reader (``catch_up``)
    store.apply_records(
        [_record(0, 5, b"a", b"1"), _record(0, 6, b"b", b"1"), _record(1, 9, b"a", b"x")]
    )
    assert list(store.db.items(0)) == [(b"a", b"1"), (b"b", b"1")]
    assert store.db.mark(0) is not None and store.db.mark(0).applied == 6
    assert store.db.mark(1) is None and list(store.db.items(1)) == []
    # Fetched again after the raw reader had them: an older value never overwrites.
    store.apply_records([_record(0, 5, b"a", b"old"), _record(0, 7, b"c", b"2")])
    assert list(store.db.items(0)) == [(b"a", b"1"), (b"b", b"1"), (b"c", b"2")]
    assert store.data == {}, "a standby partition goes to disk only"
    store._load(0)  # promoted: loaded into the table, then follows its records there too
    store.apply_records([_record(0, 8, b"d", b"3"), _record(0, 9, b"a", b"4")])
    assert store.data[b"d"] == b"3" and store.data[b"a"] == b"4"


async def test_a_scan_suspended_at_the_stop_does_not_keep_the_snapshot_from_the_disk(
    tmp_path: Path,
) -> None:
    """Faust stops the tables before the worker's SIGTERM hook writes its snapshots, which
    read the disk marks. An eviction scan suspended between two slices holds a database
    iterator: a database closed at the tables' stop stayed open under it, and opening it
    again for the marks failed on RocksDB's lock (seen at 300,000 leads: no snapshot, a
    30 s restart). The worker closes its derived stores itself, after the snapshots."""
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    store = topology._derived_stores()[0]
    store._held = {0}
    store.apply_records([_record(0, 5, b"a", b"1"), _record(0, 6, b"b", b"1")])
    scan = store.db.items(0)
    assert next(scan) == (b"a", b"1")  # suspended, as between two slices
    for table in topology.app.tables.values():
        await table.data.on_stop()  # as Faust's table stop
    assert store.db.mark(0) is not None and store.db.mark(0).applied == 6
    scan.close()
    topology.snapshots.close_stores()
    assert store._db is None
