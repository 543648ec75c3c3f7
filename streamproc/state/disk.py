"""A table's changelog kept on local disk (RocksDB through ``rocksdict``), per partition,
with a mark saying how far into the changelog it is.

One database per table, at ``<data_dir>/state/<changelog topic>``. Keys are a kind byte and
the partition (2 bytes, big endian) before the table's own key, so a partition is one range
of keys: ``d`` records hold the table's values, one ``m`` record per partition holds its
mark. A partition's records and its mark are written in one ``WriteBatch`` (atomic): a kill
at any moment leaves the disk at a mark it really reached.

The mark: ``applied``, the changelog offset up to which every record is in the database
(later ones may be too: a record applied twice is harmless, each is a whole value), and
``checked``, the offset of a record read from the broker with a digest of it, which the
next reader compares with the broker's record at that offset before it trusts the rest (a
data dir from an older broker or another cluster does not match: it is read again whole).
"""

from __future__ import annotations

import fcntl
import shutil
import struct
from collections.abc import Iterable, Iterator
from io import TextIOWrapper
from pathlib import Path
from typing import Any, NamedTuple

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, ReadOptions, WriteBatch

from streamproc.exceptions import SettingsError
from streamproc.kafka.changelog_reader import digest

__all__ = ["Mark", "StateDB", "digest", "lock_data_dir"]

_DATA = b"d"
_MARK = b"m"
_MARK_FORMAT = struct.Struct(">qq16s")
_MEMTABLE_BYTES = 8 << 20
_BLOCK_CACHE_BYTES = 8 << 20
_block_cache: Cache | None = None


def _shared_block_cache() -> Cache:
    """One block cache for every database of the process. RocksDB's default is 32 MiB a
    database: the leads database filled its own while a worker read 300,000 leads back
    (a lead not in the lead cache is one read); the OS page cache holds the files anyway."""
    global _block_cache
    if _block_cache is None:
        _block_cache = Cache(_BLOCK_CACHE_BYTES)
    return _block_cache


class Mark(NamedTuple):
    applied: int  # every changelog record up to this offset is in the database
    checked: int  # offset of a record read from the broker (-1: none)
    digest: bytes  # ``digest`` of that record


def lock_data_dir(data_dir: Path) -> TextIOWrapper:
    """Claim the data dir for this process (released when it exits, however it exits):
    two workers on one data dir would each take the other's state for their own."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "LOCK", "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SettingsError(
            f"the data dir {data_dir} is in use by another worker: give each worker a data "
            "dir of its own (STREAMPROC_DATA_DIR)"
        ) from None
    return handle


def _prefix(kind: bytes, partition: int) -> bytes:
    return kind + partition.to_bytes(2, "big")


class StateDB:
    """One table's records on disk, by changelog partition."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # RocksDB's 64 MiB memtable a database (three a worker) grew into the worker's RSS:
        # 90 MiB for 100 MB written in one database, 39 MiB with 8 MiB memtables.
        options.set_write_buffer_size(_MEMTABLE_BYTES)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(_shared_block_cache())
        options.set_block_based_table_factory(table)
        try:
            self._db: Any = Rdict(str(path), options=options)  # raw mode: bytes only
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise SettingsError(
                    f"the state database {path} is in use by another worker: give each worker "
                    "a data dir of its own (STREAMPROC_DATA_DIR)"
                ) from None
            raise

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def destroy(path: Path) -> None:
        """Remove a closed database from disk."""
        shutil.rmtree(path, ignore_errors=True)

    def mark(self, partition: int) -> Mark | None:
        raw = self._db.get(_prefix(_MARK, partition))
        if raw is None:
            return None
        applied, checked, sig = _MARK_FORMAT.unpack(raw)
        return Mark(applied, checked, sig)

    def partitions(self) -> list[int]:
        """The partitions with a mark."""
        found = []
        for key in self._db.keys(from_key=_MARK):
            if not key.startswith(_MARK):
                break
            found.append(int.from_bytes(key[1:3], "big"))
        return found

    def apply(
        self,
        partition: int,
        records: Iterable[tuple[bytes, bytes | None]],
        mark: Mark,
    ) -> int:
        """Write the records (value None: delete the key) and the new mark atomically.
        Returns the number of records written."""
        batch = WriteBatch(raw_mode=True)
        prefix = _prefix(_DATA, partition)
        n = 0
        for key, value in records:
            if value is None:
                batch.delete(prefix + key)
            else:
                batch.put(prefix + key, value)
            n += 1
        batch.put(_prefix(_MARK, partition), _MARK_FORMAT.pack(*mark))
        self._db.write(batch)
        return n

    def replace(
        self, partition: int, records: Iterable[tuple[bytes, bytes | None]], mark: Mark
    ) -> int:
        """The partition's records and mark replaced by these (a seed from a table copy),
        then written out of the memtable by RocksDB's own thread (this write is not waited
        for; with two memtables pending RocksDB may wait for the older one's, a few MB): a
        seed writes a whole partition in one go, and a year's take-over of 100,000 leads
        held 14 MiB of memtables at its peak (memray) until 8 MiB more had been written.
        Returns the number of records written."""
        self.wipe(partition)
        written = self.apply(partition, records, mark)
        self._db.flush(False)
        return written

    def items(self, partition: int, starting: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """The partition's (key, value) records, in key order; only the keys that start
        with ``starting``, if given."""
        cut = len(_prefix(_DATA, partition))
        prefix = _prefix(_DATA, partition) + starting
        # A scan reads every version of every key not compacted yet: left to fill RocksDB's
        # block cache, the load after a catch-up of 393,567 records (a year, 13,000 leads
        # kept) held ~35 MiB of blocks read once, 21 MiB in a synthetic test of the same.
        scan = ReadOptions()
        scan.fill_cache(False)  # type: ignore[call-arg]  # the stub forgets its bool
        for key, value in self._db.items(from_key=prefix, read_opt=scan):
            if not key.startswith(prefix):
                return
            yield key[cut:], value

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(_prefix(_DATA, partition) + key)
        return value

    def wipe(self, partition: int) -> None:
        """Forget the partition: its records and its mark."""
        start = _prefix(_DATA, partition)
        self._db.delete_range(start, _prefix(_DATA, partition + 1))
        self._db.delete(_prefix(_MARK, partition))
