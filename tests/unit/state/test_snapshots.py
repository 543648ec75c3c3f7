"""A snapshot is used only when the changelog, the settings and the format are those it was
taken at; otherwise (and when damaged) the partition is rebuilt. Read once."""

from __future__ import annotations

from pathlib import Path

from streamproc.config import Settings
from streamproc.engine import snapshot as engine_snapshot
from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.windows import WindowClock
from streamproc.state import snapshots as module
from streamproc.state.disk import Mark
from streamproc.state.snapshots import Snapshots
from tests.support.facts import fact
from tests.unit.engine.test_aggregates import NOW, ZONE
from tests.unit.engine.test_snapshot import samples

MARKS = {"app-leads-changelog": Mark(120, 120, b"d" * 16), "app-customers-changelog": None}


def _part() -> PartitionAggregates:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    part.apply([fact("first_contact", ("r1",), NOW - 60, 3.0)], 1)
    return part


def _snapshots(tmp_path: Path, **changes: object) -> Snapshots:
    return Snapshots(tmp_path, Settings(data_dir=tmp_path, **changes))  # type: ignore[arg-type]


WAITING = [("L1", 1, NOW + 300.0), ("L1", 2, NOW + 600.0), ("L7", 2, NOW + 3.5)]


def test_taken_at_the_same_marks_it_is_loaded_once(tmp_path: Path) -> None:
    part = _part()
    _snapshots(tmp_path).write(3, part, MARKS, WAITING)
    # another web port: the same facts, the snapshot still holds
    loaded = _snapshots(tmp_path, web_port=18_123).take(3, MARKS, part.clock, NOW)
    assert loaded is not None and samples(loaded.aggregates, NOW) == samples(part, NOW)
    assert loaded.deadlines == WAITING
    assert _snapshots(tmp_path).take(3, MARKS, part.clock, NOW) is None  # gone once read


def test_a_snapshot_of_the_format_without_deadlines_is_not_used(tmp_path: Path) -> None:
    """Version 1 held the aggregates only: its restart would schedule no SLA deadline."""
    part = _part()
    snapshots = _snapshots(tmp_path)
    meta = {"version": 1, "partition": 3, "settings": snapshots.fingerprint}
    meta["marks"] = module._marks_out(MARKS)
    snapshots.dir.mkdir(parents=True)
    snapshots.path(3).write_bytes(engine_snapshot.encode(part, meta))
    assert snapshots.take(3, MARKS, part.clock, NOW) is None


def test_a_stale_snapshot_is_not_used(tmp_path: Path) -> None:
    part = _part()
    snapshots = _snapshots(tmp_path)
    snapshots.write(3, part, MARKS)
    moved = {**MARKS, "app-leads-changelog": Mark(121, 121, b"e" * 16)}
    assert snapshots.take(3, moved, part.clock, NOW) is None  # written to since
    assert not snapshots.path(3).exists()
    snapshots.write(3, part, MARKS)
    assert snapshots.take(4, MARKS, part.clock, NOW) is None  # no snapshot of it
    snapshots.path(3).rename(snapshots.path(4))
    assert snapshots.take(4, MARKS, part.clock, NOW) is None  # another partition's
    snapshots.write(3, part, MARKS)
    other = _snapshots(tmp_path, response_sla_seconds=60)  # facts derived otherwise
    assert other.take(3, MARKS, part.clock, NOW) is None


def test_another_format_version_is_not_used(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    part = _part()
    snapshots = _snapshots(tmp_path)
    snapshots.write(3, part, MARKS)
    monkeypatch.setattr(module, "VERSION", module.VERSION + 1)
    assert snapshots.take(3, MARKS, part.clock, NOW) is None


def test_a_corrupt_snapshot_falls_back_to_a_rebuild(tmp_path: Path) -> None:
    part = _part()
    snapshots = _snapshots(tmp_path)
    snapshots.write(3, part, MARKS)
    data = snapshots.path(3).read_bytes()
    snapshots.path(3).write_bytes(data[:-10])
    assert snapshots.take(3, MARKS, part.clock, NOW) is None
    assert not snapshots.path(3).exists()
    assert not list(snapshots.dir.glob("*.tmp"))


def test_the_brokers_copy_is_used_when_the_data_dir_has_none_usable(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A worker taking a partition over without the writer's data dir: the bytes the
    writer published, checked like a file's."""
    part = _part()
    published = _snapshots(tmp_path / "writer").write(3, part, MARKS, WAITING)
    taker = _snapshots(tmp_path / "taker")
    loaded = taker.take(3, MARKS, part.clock, NOW, published)
    assert loaded is not None and samples(loaded.aggregates, NOW) == samples(part, NOW)
    assert loaded.deadlines == WAITING
    moved = {**MARKS, "app-leads-changelog": Mark(121, 121, b"e" * 16)}
    assert taker.take(3, moved, part.clock, NOW, published) is None  # written to since
    assert taker.take(4, MARKS, part.clock, NOW, published) is None  # another partition's
    taker.write(3, part, moved)  # the data dir's own, stale: the broker's still serves
    assert not taker.usable(3, MARKS) and taker.usable(3, moved)  # so it is fetched
    assert taker.take(3, MARKS, part.clock, NOW, published) is not None
    monkeypatch.setattr(module.sys, "byteorder", "big")  # arrays of another machine
    assert taker.take(3, MARKS, part.clock, NOW, published) is None
