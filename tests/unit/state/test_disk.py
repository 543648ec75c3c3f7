"""StateDB: records by partition, the mark written with them, a locked database refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamproc.exceptions import SettingsError
from streamproc.state.disk import Mark, StateDB, digest, lock_data_dir


def test_partitions_are_kept_apart_and_marked(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state" / "app-leads-changelog")
    sig = digest(b"k", b"v", 1)
    db.apply(0, [(b"a", b"1"), (b"b", b"2")], Mark(5, 5, sig))
    db.apply(1, [(b"a", b"other")], Mark(0, -1, b"\0" * 16))
    db.apply(0, [(b"b", None), (b"c", b"3")], Mark(7, 5, sig))
    assert list(db.items(0)) == [(b"a", b"1"), (b"c", b"3")]
    assert list(db.items(1)) == [(b"a", b"other")]
    assert db.mark(0) == Mark(7, 5, sig)
    assert db.mark(2) is None
    assert db.partitions() == [0, 1]
    db.close()
    reopened = StateDB(tmp_path / "state" / "app-leads-changelog")  # what a restart finds
    assert list(reopened.items(0)) == [(b"a", b"1"), (b"c", b"3")]
    assert reopened.mark(0) == Mark(7, 5, sig)
    reopened.close()


def test_wipe_forgets_one_partition(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "db")
    for p in (0, 1, 2):
        db.apply(p, [(b"k", str(p).encode())], Mark(p, -1, b"\0" * 16))
    db.wipe(1)
    assert [list(db.items(p)) for p in (0, 1, 2)] == [[(b"k", b"0")], [], [(b"k", b"2")]]
    assert db.mark(1) is None
    assert db.partitions() == [0, 2]
    db.close()


def _memtable_bytes(db: StateDB) -> int:
    return int(db._db.property_int_value("rocksdb.cur-size-all-mem-tables"))


def test_a_partition_replaced_from_a_copy_leaves_no_memtable(tmp_path: Path) -> None:
    """A seed writes a whole partition at once: its memtable is written out, not kept in
    memory until more is written (14 MiB at a year's take-over peak)."""
    db = StateDB(tmp_path / "db")
    db.apply(0, [(b"old", b"x")], Mark(1, -1, b"\0" * 16))
    db.apply(1, [(b"kept", b"y")], Mark(2, -1, b"\0" * 16))
    copy = [(b"lead-%05d" % i, b"v" * 500) for i in range(10_000)]  # ~5 MB
    assert db.replace(0, copy, Mark(9, 9, b"\1" * 16)) == len(copy)
    for _ in range(200):  # RocksDB's flush thread: ~10 ms here
        if _memtable_bytes(db) < 100_000:
            break
        time.sleep(0.01)
    assert _memtable_bytes(db) < 100_000
    assert list(db.items(0)) == copy and db.mark(0) == Mark(9, 9, b"\1" * 16)
    assert list(db.items(1)) == [(b"kept", b"y")]
    db.close()


def test_digest_tells_records_apart() -> None:
    assert digest(b"k", b"v", 1) == digest(b"k", b"v", 1)
    assert len({digest(b"k", b"v", 1), digest(b"k", b"v", 2), digest(b"kv", b"", 1)}) == 3
    assert digest(b"k", None, 1) == digest(b"k", b"", 1)  # a tombstone: no value


def test_a_database_in_use_is_a_clear_error(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "db")
    with pytest.raises(SettingsError, match="a data dir of its own"):
        StateDB(tmp_path / "db")
    db.close()


def test_a_data_dir_is_claimed_by_one_worker(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path / "w1")
    with pytest.raises(SettingsError, match="data dir of its own"):
        lock_data_dir(tmp_path / "w1")
    lock_data_dir(tmp_path / "w2").close()  # another dir: free
    held.close()
    lock_data_dir(tmp_path / "w1").close()  # free again once its holder let go
