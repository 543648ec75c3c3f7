"""Table copies: a partition's records of every table, at their marks, come back whole; a
copy of another partition, cut short or over the size limit is none (read the changelog)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.state.disk import Mark, StateDB
from streamproc.state.table_copies import CopyError, TableCopy, decode, encode


def _dbs(tmp_path: Path) -> dict[str, StateDB]:
    leads, customers, empty = (StateDB(tmp_path / name) for name in ("l", "c", "e"))
    leads.apply(0, [(b"a", b"1"), (b"b", b"22"), (b"gone", None)], Mark(7, 7, b"x" * 16))
    leads.apply(1, [(b"other", b"partition")], Mark(3, 3, b"y" * 16))
    customers.apply(0, [(b"c", b"")], Mark(2, 1, b"z" * 16))
    return {"leads-changelog": leads, "customers-changelog": customers, "empty": empty}


def test_a_partitions_records_come_back_at_their_marks(tmp_path: Path) -> None:
    data = encode(0, _dbs(tmp_path))
    assert data is not None
    assert decode(data, 0) == {  # a database without a mark for it is not in the copy
        "leads-changelog": TableCopy(Mark(7, 7, b"x" * 16), [(b"a", b"1"), (b"b", b"22")]),
        "customers-changelog": TableCopy(Mark(2, 1, b"z" * 16), [(b"c", b"")]),
    }


def test_no_copy_without_a_mark_or_over_the_limit(tmp_path: Path) -> None:
    dbs = _dbs(tmp_path)
    assert encode(5, dbs) is None  # no table holds partition 5
    assert encode(0, dbs, max_bytes=10) is None
    assert encode(0, dbs, max_bytes=100) is not None


def test_another_partitions_or_a_damaged_copy_is_refused(tmp_path: Path) -> None:
    data = encode(0, _dbs(tmp_path))
    assert data is not None
    with pytest.raises(CopyError, match="partition 0, not 1"):
        decode(data, 1)
    for damaged in (data[:-3], data[:30], b"something else", data + b"\x00"):
        with pytest.raises(CopyError):
            decode(damaged, 0)
