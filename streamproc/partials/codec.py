"""The partial summaries' wire form: message keys (owner key and source partition), sweep
markers, and the summary bytes (a JSON head and the value multisets as float64 arrays)."""

from __future__ import annotations

import logging
import math
import sys
import threading
import zlib
from array import array
from collections.abc import Callable, Generator, Sequence
from typing import Any

import orjson
import zstandard

from streamproc.engine.aggregates import Acc, Multiset, SortedValues
from streamproc.engine.windows import PERIODS
from streamproc.kpis.compute import Summary, merging
from streamproc.runtime.heap import to_keep

__all__ = [
    "BEGIN",
    "END",
    "SWEEP",
    "Message",
    "Sent",
    "decode",
    "encode",
    "is_partial_key",
    "merged",
    "message_key",
    "owner_of",
    "owner_partition",
    "source_of",
]

SEP = b"\x00"
LABEL_SEP = "\x1f"
SWEEP = b"\x00sweep\x00"  # + source partition; value b"begin <token>" or b"end <token>"
BEGIN, END = b"begin", b"end"
FORMAT = b"SPv2"  # the partials' binary form (see ``encode``); before it, JSON

log = logging.getLogger(__name__)

_COMPRESSOR = zstandard.ZstdCompressor(level=1, write_checksum=False)  # the loop's thread only
# One decompressor per thread: a ZstdDecompressor must not be used by two threads at once
# (it lets go of the GIL while it works), and the partials' view is merged ahead in a
# thread of its own while the loop decodes the rollups (two threads sharing one: wrong
# bytes, some without an error, 6 in 6,000 calls).
_PER_THREAD = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    mine: zstandard.ZstdDecompressor | None = getattr(_PER_THREAD, "decompressor", None)
    if mine is None:
        mine = _PER_THREAD.decompressor = zstandard.ZstdDecompressor()
    return mine


# (message key, value: empty retracts, partition of the partials topic)
Message = tuple[bytes, bytes, int]
# What a publisher remembers of a summary it sent: a digest of its bytes and their length
# (the bytes themselves were ~8 MB at 100 reps and 100,000 leads).
Sent = tuple[bytes, int]


def owner_partition(owner_key: str, partitions: int) -> int:
    return zlib.crc32(owner_key.encode()) % partitions


def message_key(owner_key: str, partition: int) -> bytes:
    return owner_key.encode() + SEP + str(partition).encode()


def owner_of(key: bytes) -> str:
    return key.split(SEP, 1)[0].decode()


def is_partial_key(key: bytes) -> bool:
    """Whether ``key`` is an owner key and a partition, as ``message_key`` makes them."""
    owner, sep, source = key.rpartition(SEP)
    if not (sep and owner and source.isdigit()) or key.startswith(SEP):
        return False
    try:
        owner.decode()
    except UnicodeDecodeError:
        return False
    return True


def source_of(key: bytes) -> int:
    """The partition whose summary a message key carries."""
    return int(key.rsplit(SEP, 1)[1])


def encode(summary: Summary) -> bytes:
    """The summary as sent (and kept by the owner's table): ``FORMAT``, then zstd of the
    head's length (4 bytes, little-endian), the head and the values.

    The head is JSON: family -> labels -> window -> [count, total, values], where values
    is None or [start, length] of the accumulator's multiset in the values: every
    multiset's values sorted, as little-endian float64, one after another. A counted
    multiset (the calendar periods' and the month rollups' sketches: a value and how many
    times) is [start, length, counts]: its distinct values there, their counts from
    ``counts`` on. The owner reads
    them as arrays, without parsing: as JSON pairs they were most of a partial's bytes and
    of its decoding (~47 ms a MB), and the owner decoded 4 of 570 KB for one key. A round's
    partials are 1 - 4 MB at 100 reps and 100,000 leads, fetched back by their owner and
    written to its changelog: compressed, they hold up the events fetched with them less.
    """
    runs: list[array[float]] = []
    start = 0

    def row(acc: Acc, window: str) -> list[object]:
        nonlocal start
        total = _wire_total(acc.total)
        if acc.values is None:
            return [acc.count, total, None]
        if window in PERIODS or window.isdigit():  # a period's, a month's: sketched
            multiset = dict(acc.values.items())
            distinct = sorted(multiset)
            counts = [float(multiset[v]) for v in distinct]
            runs.append(array("d", distinct + counts))
            start += 2 * len(distinct)
            where = start - 2 * len(distinct)
            return [acc.count, total, [where, len(distinct), where + len(distinct)]]
        run = acc.sorted_values()
        runs.append(run)
        start += len(run)
        return [acc.count, total, [start - len(run), len(run)]]

    # sorted, so that the same summary is the same bytes (the publisher compares digests)
    head = orjson.dumps(
        {
            family: {
                LABEL_SEP.join(labels): {w: row(per_window[w], w) for w in sorted(per_window)}
                for labels, per_window in sorted(per_labels.items())
            }
            for family, per_labels in sorted(summary.items())
        }
    )
    body = b"".join([len(head).to_bytes(4, "little"), head, *map(_little_endian, runs)])
    return to_keep(FORMAT + _COMPRESSOR.compress(body))


def decode(raw: bytes) -> Summary:
    """A summary as ``encode`` wrote it, or as earlier versions did (JSON with the values
    as [value, count] pairs, compressed or not: a changelog may still hold them)."""
    wire, multiset = _head(raw)
    return _summary(wire, multiset)


def merged(
    raws: Sequence[bytes], undecodable: Callable[[bytes, Exception], None]
) -> Generator[None, None, Summary]:
    """The summaries of ``raws`` merged, as ``merging`` merges them decoded (each
    accumulator once from all of its parts, its values frozen: read it, do not change
    it), without an ``Acc`` per part: the owner merges every changed key each round, and
    its partials' rows decoded into accumulators first took ~40 % of that merge. A raw
    that does not decode goes to ``undecodable`` and is left out. Yields None after each
    raw and each series, where the caller may let the event loop run; the summary is the
    generator's return value."""
    heads: list[tuple[Any, Callable[[Any], Multiset]]] = []
    read: list[bytes] = []  # the raws whose head was read
    for raw in raws:
        try:
            heads.append(_head(raw))
            read.append(raw)
        except Exception as exc:  # any error of unknown bytes: the caller logs it
            undecodable(raw, exc)
        yield None
    try:
        return (yield from _merged_heads(heads))
    except Exception:  # a head of another shape: each decoded alone, the bad ones left out
        decoded = []
        for raw in read:
            try:
                decoded.append(decode(raw))
            except Exception as exc:
                undecodable(raw, exc)
        return (yield from merging(decoded))


def _merged_heads(
    heads: list[tuple[Any, Callable[[Any], Multiset]]],
) -> Generator[None, None, Summary]:
    gathered: dict[str, dict[str, dict[str, list[tuple[list[Any], Any]]]]] = {}
    for wire, multiset in heads:
        for family, per_labels in wire.items():
            into = gathered.setdefault(family, {})
            for labels, per_window in per_labels.items():
                rows = into.setdefault(labels, {})
                for window, row in per_window.items():
                    rows.setdefault(window, []).append((row, multiset))
    out: Summary = {}
    for family, per_labels in gathered.items():
        into_family = out[family] = {}
        for labels, per_window in per_labels.items():
            key = tuple(labels.split(LABEL_SEP)) if labels else ()
            into_family[key] = {w: _merged_rows(r, w in PERIODS) for w, r in per_window.items()}
            yield None
    return out


def _merged_rows(rows: list[tuple[list[Any], Callable[[Any], Multiset]]], counted: bool) -> Acc:
    """``Acc.merged`` of the rows' accumulators (``counted``: the periods' sketches); the
    multisets are read from the bytes for it (``fresh``)."""
    return Acc.of_parts(
        sum(row[0] for row, _ in rows),
        sum(_read_total(row[1]) for row, _ in rows),
        [multiset(row[2]) for row, multiset in rows if row[2] is not None],
        counted,
        fresh=True,
    )


def _head(raw: bytes) -> tuple[Any, Callable[[Any], Multiset]]:
    """The JSON head of a summary, and how to read a row's values from it."""
    if not raw.startswith(FORMAT):  # JSON, the values as [value, count] pairs
        return orjson.loads(raw if raw[:1] == b"{" else _decompressor().decompress(raw)), dict
    body = _decompressor().decompress(raw[len(FORMAT) :])
    end = 4 + int.from_bytes(body[:4], "little")
    values = array("d")
    values.frombytes(body[end:])
    if sys.byteorder != "little":
        values.byteswap()

    def multiset(ref: list[int]) -> Multiset:
        start, length = ref[0], ref[1]
        if len(ref) > 2:  # counted: distinct values, then their counts
            counts = values[ref[2] : ref[2] + length]
            return dict(zip(values[start : start + length], map(int, counts), strict=True))
        return SortedValues(values[start : start + length])

    return orjson.loads(body[4:end]), multiset


def _summary(wire: dict[str, Any], multiset: Callable[[Any], Multiset]) -> Summary:
    """The summary of a decoded head; ``multiset`` reads a row's values (when not None)."""

    def acc(row: list[Any]) -> Acc:
        out = Acc()
        out.count, out.total = row[0], _read_total(row[1])
        if row[2] is not None:
            out.values = multiset(row[2])
        return out

    return {
        family: {
            tuple(labels.split(LABEL_SEP)) if labels else (): {
                w: acc(row) for w, row in per_window.items()
            }
            for labels, per_window in per_labels.items()
        }
        for family, per_labels in wire.items()
    }


def _wire_total(total: float) -> float | str:
    """A total as JSON can hold it: JSON has no inf or NaN (orjson writes null for them), so
    a total that overflowed goes as the string ``float`` reads back ("inf", "nan")."""
    return total if math.isfinite(total) else str(total)


def _read_total(total: float | str | None) -> float:
    """A total as ``_wire_total`` wrote it; None is how an earlier build wrote inf or NaN
    (a merge then failed on int + None): read as NaN, not known any more."""
    return math.nan if total is None else float(total)


def _little_endian(run: array[float]) -> bytes:
    if sys.byteorder == "little":
        return run.tobytes()
    swapped = array("d", run)
    swapped.byteswap()
    return swapped.tobytes()
