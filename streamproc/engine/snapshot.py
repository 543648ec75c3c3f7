"""One partition's aggregates and its leads' SLA deadlines as bytes and back, exactly: what
a worker stopping cleanly writes so that its restart loads them instead of deriving them
again from every lead.

The structure goes as JSON (orjson: floats round-trip exactly), every array as its raw
bytes after it (native byte order: a snapshot is read on the machine that wrote it), the
whole compressed with zstandard. ``meta`` is the caller's (what the snapshot was taken
of); ``decode`` raises ``SnapshotError`` for anything it cannot read back whole.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator
from sys import intern
from typing import Any

import orjson
import zstandard

from streamproc.engine.aggregates import (
    DIST_FAMILIES,
    NO_COUNTS,
    Acc,
    PartitionAggregates,
    _Ahead,
    _Buckets,
    _Series,
    _SketchedBuckets,
    own_level,
)
from streamproc.engine.sla_watch import LEVELS, Deadline
from streamproc.engine.windows import WindowClock

__all__ = ["SnapshotError", "deadlines", "decode", "encode", "read_head", "read_meta"]

_HEAD = struct.Struct(">I")  # length of the JSON part
_NONE = -1  # an absent array


class SnapshotError(ValueError):
    """A snapshot that cannot be read back whole (corrupt, truncated, not one)."""


class _Arrays:
    """Arrays written after the JSON; the JSON refers to them by index."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def put(self, values: array[Any] | None) -> int:
        if values is None:
            return _NONE
        self.blobs.append(values.tobytes())
        return len(self.blobs) - 1

    def put_counts(self, counts: Iterable[tuple[float, int]]) -> list[int]:
        """A value -> count multiset as two arrays (values, counts)."""
        pairs = list(counts)
        values = array("d", [v for v, _ in pairs])
        return [self.put(values), self.put(array("q", [n for _, n in pairs]))]


class _Read:
    def __init__(self, blobs: list[memoryview]) -> None:
        self.blobs = blobs

    def get(self, ref: int, typecode: str) -> array[Any]:
        out = array(typecode)
        out.frombytes(self.blobs[ref])
        return out

    def get_counts(self, refs: list[int]) -> dict[float, int]:
        """A counted multiset."""
        return dict(zip(*self.counted(refs), strict=True))

    def counted(self, refs: list[int]) -> tuple[array[float], array[int]]:
        """A counted multiset's values and their counts, two arrays."""
        values, counts = self.get(refs[0], "d"), self.get(refs[1], "q")
        if len(values) != len(counts):
            raise SnapshotError("a multiset's values and counts differ in length")
        return values, counts


def _acc_out(acc: Acc, arrays: _Arrays) -> list[Any]:
    values = None if acc.values is None else arrays.put_counts(acc.values.items())
    return [acc.count, acc.total, values]


def _acc_in(raw: list[Any], dist: bool, read: _Read) -> Acc:
    acc = Acc(dist)
    acc.count, acc.total = int(raw[0]), float(raw[1])
    if raw[2] is not None:
        acc.values = read.get_counts(raw[2])
    return acc


def _buckets_out(buckets: _Buckets, arrays: _Arrays) -> list[Any] | None:
    empty = not buckets.counts and buckets.totals is None and buckets.ahead is None
    if empty and not buckets.values:
        # Empty (where it starts says nothing then): most minute levels at a restart (a
        # quarter of all levels at 100,000 leads), read back as a new level is.
        return None
    values: list[Any] | None = None
    if buckets.values is not None:
        if isinstance(buckets, _SketchedBuckets):  # values counted by sketch bucket
            items = buckets.month_items
            values = [[k, *arrays.put_counts(items(v))] for k, v in buckets.values.items()]
        else:
            values = [[k, arrays.put(v)] for k, v in buckets.values.items()]
    counts, totals = arrays.put(buckets.counts), arrays.put(buckets.totals)
    ahead = buckets.ahead
    sparse = (
        None if ahead is None else [arrays.put(a) for a in (ahead.keys, ahead.counts, ahead.totals)]
    )
    return [buckets.first, buckets.used, counts, totals, values, sparse]


def _buckets_in(empty: _Buckets, raw: list[Any] | None, read: _Read) -> _Buckets:
    """The level ``raw`` encodes, of ``empty``'s kind (``empty`` itself when it is none)."""
    if raw is None:
        return empty  # nothing in it: a series' levels start as the shared empty ones
    target = own_level(empty)
    first, used, counts, totals, values, sparse = raw
    target.first, target.used = int(first), int(used)
    target.counts = read.get(counts, "i") or NO_COUNTS
    target.totals = None if totals == _NONE else read.get(totals, "d")
    if target.totals is not None and len(target.totals) != len(target.counts):
        raise SnapshotError("a level's counts and totals differ in length")
    if sparse is not None:
        ahead = target.ahead = _Ahead()
        ahead.keys, ahead.counts, ahead.totals = (
            read.get(ref, typecode) for ref, typecode in zip(sparse, "qid", strict=True)
        )
        if not len(ahead.keys) == len(ahead.counts) == len(ahead.totals) or not ahead:
            raise SnapshotError("a level's buckets ahead differ in length, or are none")
    if values is None:
        if target.values is not None:
            raise SnapshotError("a distribution's level without values")
        return target
    if isinstance(target, _SketchedBuckets):
        month_of = target.month_of
        target.values = {int(k): month_of(*read.counted(refs)) for k, *refs in values}
    else:
        target.values = {int(k): read.get(ref, "d") for k, ref in values}
    return target


def _levels(series: _Series) -> tuple[_Buckets, ...]:
    return (series.m, series.h, series.d, series.M.kept, series.M.archive)


def _series_out(series: _Series, arrays: _Arrays) -> list[Any]:
    return [_buckets_out(level, arrays) for level in _levels(series)]


def _series_in(raw: list[Any], dist: bool, read: _Read) -> _Series:
    series = _Series(dist)
    levels = [
        _buckets_in(empty, level, read) for empty, level in zip(_levels(series), raw, strict=True)
    ]
    series.m, series.h, series.d, series.M.kept, series.M.archive = levels
    return series


def encode(
    part: PartitionAggregates, meta: dict[str, Any], waiting: Iterable[Deadline] = ()
) -> bytes:
    """The aggregates (windowed series at every level, live accumulators, watermarks), the
    SLA deadlines of the partition's ``waiting`` leads (``AlertWatch.deadlines``) and
    ``meta``, compressed."""
    arrays = _Arrays()
    windowed = [
        [family, list(labels), _series_out(series, arrays)]
        for family, per_labels in part.windowed.items()
        for labels, series in per_labels.items()
    ]
    live = [
        [family, list(labels), _acc_out(acc, arrays)]
        for family, per_labels in part.live.items()
        for labels, acc in per_labels.items()
    ]
    marks = [part.wm_minute, part.wm_hour, part.wm_day, part.wm_period]
    body = {
        "meta": meta,
        "watermarks": marks,
        "windowed": windowed,
        "live": live,
        "deadlines": [list(d) for d in waiting],
        "blobs": [len(b) for b in arrays.blobs],
    }
    head = orjson.dumps(body)
    raw = b"".join([_HEAD.pack(len(head)), head, *arrays.blobs])
    return zstandard.ZstdCompressor(level=1).compress(raw)


def read_head(data: bytes) -> dict[str, Any]:
    """The meta of a snapshot, without decompressing its arrays (most of its bytes: 6.3 of
    7.1 MB at 100,000 leads): whether it is usable is known before it is read whole."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data)
        (size,) = _HEAD.unpack(reader.read(_HEAD.size))
        head = b""
        while len(head) < size and (chunk := reader.read(size - len(head))):
            head += chunk
        body = orjson.loads(head)
    except (zstandard.ZstdError, struct.error, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"not a snapshot: {exc}") from None
    return _meta(body)


def read_meta(data: bytes) -> tuple[dict[str, Any], dict[str, Any], memoryview]:
    """(meta, the rest of the structure, the arrays' bytes) of a snapshot. The arrays are
    a view, not a copy, and so are their blobs in ``decode`` (a year's partition: 4.4 MB
    of arrays; its decode peaked at 33.6 MB traced with the copies, 32.3 without)."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
        (size,) = _HEAD.unpack_from(raw)
        body = orjson.loads(raw[_HEAD.size : _HEAD.size + size])
    except (zstandard.ZstdError, struct.error, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"not a snapshot: {exc}") from None
    return _meta(body), body, memoryview(raw)[_HEAD.size + size :]


def _meta(body: object) -> dict[str, Any]:
    """The meta of a snapshot's parsed head."""
    if not isinstance(body, dict) or not isinstance(body.get("meta"), dict):
        raise SnapshotError("not a snapshot: no meta")
    meta: dict[str, Any] = body["meta"]
    return meta


def _split(body: dict[str, Any], tail: memoryview) -> list[memoryview]:
    blobs, at = [], 0
    for size in body["blobs"]:
        blobs.append(tail[at : at + size])
        at += size
    if at != len(tail):
        raise SnapshotError("the arrays' bytes do not add up")
    return blobs


def decode(
    body: dict[str, Any], tail: memoryview, clock: WindowClock, now: float
) -> PartitionAggregates:
    """The aggregates of a snapshot's ``read_meta`` parts (not pruned to ``now``)."""
    try:
        read = _Read(_split(body, tail))
        part = PartitionAggregates(clock, now)
        part.wm_minute, part.wm_hour, part.wm_day, part.wm_period = map(float, body["watermarks"])
        for family, labels, raw in _consumed(body["windowed"]):
            family = intern(family)
            key = tuple(intern(label) for label in labels)
            series = _series_in(raw, family in DIST_FAMILIES, read)
            part.windowed.setdefault(family, {})[key] = series
        for family, labels, raw in body["live"]:
            family = intern(family)
            key = tuple(intern(label) for label in labels)
            part.live.setdefault(family, {})[key] = _acc_in(raw, family in DIST_FAMILIES, read)
    except SnapshotError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SnapshotError(f"a snapshot not of this form: {exc!r}") from None
    return part


def _consumed(items: list[Any]) -> Iterator[Any]:
    """``items`` in order, each dropped from the list as it is handed out: a parsed series
    goes once it is decoded, instead of the whole parse staying until the end beside what
    it was decoded into."""
    if not isinstance(items, list):
        raise SnapshotError(f"a snapshot's series are not a list: {type(items).__name__}")
    items.reverse()
    while items:
        yield items.pop()


def deadlines(body: dict[str, Any]) -> list[Deadline]:
    """The SLA deadlines of a snapshot's ``read_meta`` body."""
    out = []
    try:
        for lead_id, level, due in body["deadlines"]:
            if not (isinstance(lead_id, str) and level in LEVELS and _is_number(due)):
                raise SnapshotError(f"not a deadline: {[lead_id, level, due]!r}")
            out.append((lead_id, level, float(due)))
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"a snapshot's deadlines not of this form: {exc!r}") from None
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
