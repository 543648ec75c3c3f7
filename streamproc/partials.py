"""Partial summaries: how whole metrics (ratios, means, quantiles) get all of their facts.

Leads are partitioned by ``lead_id``, so one rep's facts lie on every partition. Each
worker publishes, per owned partition and owner key, the window accumulators that the
partition contributes (``key = owner key + partition``), to the partition of the internal
topic that the owner key hashes to. The worker that owns that partition keeps the latest
summary per (owner key, source partition) in a changelogged table and merges them: it
alone exports the key's whole metrics. A summary replaces the previous one from the same
source partition, so re-publishing after a crash or a rebalance never double counts.

A summary the previous owner of a partition sent, for an owner key the new owner never
has, would stay forever (a worker killed after a lead's late lead-created moved its close
away from source ``unknown``, before it retracted that summary). So every full round of a
partition, and the first round of a partition newly owned, is bracketed by sweep markers
on every partition of the topic: the owner side (``PartialsInbox``) drops the summaries of
that partition the bracket did not send again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import zlib
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import orjson
import zstandard

from streamproc.aggregates import Acc, Multiset, PartitionAggregates, SortedValues
from streamproc.heap import to_keep
from streamproc.kpis import Summary, merging, owner_keys_of, summaries_in_steps
from streamproc.windows import WindowClock

__all__ = [
    "FullRounds",
    "PartialsInbox",
    "PartialsPublisher",
    "PartialsView",
    "decode",
    "encode",
    "owner_partition",
]

SEP = b"\x00"
LABEL_SEP = "\x1f"
SWEEP = b"\x00sweep\x00"  # + source partition; value b"begin <token>" or b"end <token>"
BEGIN, END = b"begin", b"end"
FORMAT = b"SPv2"  # the partials' binary form (see ``encode``); before it, JSON

log = logging.getLogger(__name__)

_COMPRESSOR = zstandard.ZstdCompressor(level=1, write_checksum=False)
_DECOMPRESSOR = zstandard.ZstdDecompressor()

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
    multiset's values sorted, as little-endian float64, one after another. The owner reads
    them as arrays, without parsing: as JSON pairs they were most of a partial's bytes and
    of its decoding (~47 ms a MB), and the owner decoded 4 of 570 KB for one key. A round's
    partials are 1 - 4 MB at 100 reps and 100,000 leads, fetched back by their owner and
    written to its changelog: compressed, they hold up the events fetched with them less.
    """
    runs: list[array[float]] = []
    start = 0

    def row(acc: Acc) -> list[object]:
        nonlocal start
        if acc.values is None:
            return [acc.count, acc.total, None]
        run = acc.sorted_values()
        runs.append(run)
        start += len(run)
        return [acc.count, acc.total, [start - len(run), len(run)]]

    # sorted, so that the same summary is the same bytes (the publisher compares digests)
    head = orjson.dumps(
        {
            family: {
                LABEL_SEP.join(labels): {w: row(per_window[w]) for w in sorted(per_window)}
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
    if not raw.startswith(FORMAT):
        return _decode_json(raw)
    body = _DECOMPRESSOR.decompress(raw[len(FORMAT) :])
    end = 4 + int.from_bytes(body[:4], "little")
    values = array("d")
    values.frombytes(body[end:])
    if sys.byteorder != "little":
        values.byteswap()

    def multiset(ref: list[int]) -> SortedValues:
        start, length = ref
        return SortedValues(values[start : start + length])

    return _summary(orjson.loads(body[4:end]), multiset)


def _decode_json(raw: bytes) -> Summary:
    wire = orjson.loads(raw if raw[:1] == b"{" else _DECOMPRESSOR.decompress(raw))
    return _summary(wire, dict)  # values as [value, count] pairs


def _summary(wire: dict[str, Any], multiset: Callable[[Any], Multiset]) -> Summary:
    """The summary of a decoded head; ``multiset`` reads a row's values (when not None)."""

    def acc(row: list[Any]) -> Acc:
        out = Acc()
        out.count, out.total = row[0], row[1]
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


def _little_endian(run: array[float]) -> bytes:
    if sys.byteorder == "little":
        return run.tobytes()
    swapped = array("d", run)
    swapped.byteswap()
    return swapped.tobytes()


class PartialsPublisher:
    """Remembers what was last sent per (owner key, partition) and yields only changes.

    A round may be given a byte budget: then the changed owner keys of a partition are
    recomputed and sent oldest change first, as long as the sizes they had when last sent
    fit in the partition's share; the others stay pending for the next rounds. At 100,000
    leads and 100 reps nearly every key changed every second, and re-sending them all
    (~7 MB/s, decoded and merged again by the owners) took most of a worker's event loop.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._sent: dict[int, dict[str, Sent]] = {}
        # partition -> owner key changed and not sent yet -> since when (oldest go first)
        self._pending: dict[int, dict[str, float]] = {}

    def changes(
        self,
        partition: int,
        current: Mapping[str, Summary],
        keys: Collection[str] | None = None,
        force: bool = False,
    ) -> Iterator[Message]:
        """(message key, value, target partition); an empty value retracts a summary.

        ``keys``: the owner keys ``current`` was computed for (None: all of them); a key in
        it and not in ``current`` is retracted, a key not in it is left as it was sent.
        ``force``: send every summary in ``current``, changed or not.
        """
        for owner_key, summary in current.items():
            message = self.change(partition, owner_key, summary, force)
            if message is not None:
                yield message
        yield from self.retractions(partition, current, keys)

    def change(
        self, partition: int, owner_key: str, summary: Summary, force: bool = False
    ) -> Message | None:
        """The message for this summary, or None when it is what was sent last."""
        sent = self._sent.setdefault(partition, {})
        raw = encode(summary)
        remembered = (hashlib.blake2b(raw, digest_size=16).digest(), len(raw))
        if not force and sent.get(owner_key) == remembered:
            return None
        sent[owner_key] = remembered
        return self._message(owner_key, partition, raw)

    def retractions(
        self, partition: int, current: Mapping[str, Summary], keys: Collection[str] | None
    ) -> list[Message]:
        """Retract what was sent for the keys (all when None) that ``current`` no longer has."""
        sent = self._sent.setdefault(partition, {})
        gone = [k for k in (sent if keys is None else keys) if k in sent and k not in current]
        for owner_key in gone:
            del sent[owner_key]
        return [self._message(owner_key, partition, b"") for owner_key in gone]

    def _message(self, owner_key: str, partition: int, raw: bytes) -> Message:
        return message_key(owner_key, partition), raw, owner_partition(owner_key, self.partitions)

    def _sweep_markers(self, partition: int, phase: bytes, token: bytes) -> list[Message]:
        key = SWEEP + str(partition).encode()
        return [(key, phase + b" " + token, target) for target in range(self.partitions)]

    def round(
        self,
        parts: Mapping[int, PartitionAggregates],
        clock: WindowClock,
        now: float,
        full: bool | Collection[int] = False,
        budget: int | None = None,
    ) -> Iterator[Message | None]:
        """One publication: a message per summary that changed since it was last sent.

        Only the owner keys whose accumulators may have changed are recomputed (see
        ``PartitionAggregates.take_touched``); ``full`` (True: all partitions, else those
        given): every key, and every summary sent again, changed or not, between sweep
        markers (so is the first round of a partition new here). ``budget``: bytes for the
        changed keys of the other partitions (see the class).
        Between series and keys it yields None: there the caller may let the event loop
        run (a batch applied meanwhile is published by the next round). A partition that
        left ``parts`` meanwhile is not published further. A round not run to its end loses
        the changes it took: the next one must be full.
        """
        all_bounds = clock.all_bounds(now)
        share = None if budget is None else budget // max(1, len(parts))
        in_full = set(parts) if full is True else set(full or ())
        for partition, part in list(parts.items()):
            touched = part.take_touched(all_bounds)
            sweep = partition in in_full or partition not in self._sent
            keys = None if sweep or touched is None else owner_keys_of(touched)
            if keys is None:
                self._pending.pop(partition, None)  # every key is recomputed now
            else:
                keys = self._oldest_within(partition, keys, share, now)
            current: dict[str, Summary] = {}
            if keys is None or keys:
                current = yield from summaries_in_steps(part, clock, now, keys)
            token = os.urandom(8).hex().encode() if sweep else b""
            if sweep:
                yield from self._sweep_markers(partition, BEGIN, token)
            for owner_key, summary in current.items():
                if parts.get(partition) is not part:
                    break  # moved away while the loop ran: the new owner publishes it
                yield self.change(partition, owner_key, summary, force=sweep)
            else:
                yield from self.retractions(partition, current, keys)
                if sweep:
                    yield from self._sweep_markers(partition, END, token)
            yield None

    def _oldest_within(
        self, partition: int, changed: set[str], share: int | None, now: float
    ) -> set[str]:
        """Of the keys changed now or pending, the oldest changes whose last sizes fit in
        ``share`` bytes (at least one; all when None); the others stay pending."""
        pending = self._pending.setdefault(partition, {})
        for key in changed:
            pending.setdefault(key, now)
        if share is None:
            self._pending[partition] = {}
            return set(pending)
        sent = self._sent.get(partition, {})
        taken: set[str] = set()
        for key in sorted(pending, key=pending.__getitem__):
            size = sent[key][1] if key in sent else 0
            if taken and size > share:
                break
            taken.add(key)
            share -= size
        for key in taken:
            del pending[key]
        return taken

    def keep_only(self, partitions: Iterable[int]) -> None:
        """A partition that moved away is the new owner's to publish (it starts afresh)."""
        keep = set(partitions)
        for p in [p for p in self._sent if p not in keep]:
            del self._sent[p]
        for p in [p for p in self._pending if p not in keep]:
            del self._pending[p]


class FullRounds:
    """Which partitions a publish round sends in full: each once every ``period`` seconds,
    and at most one a round, the longest since. A full round of all partitions at once sent
    ~8 MB at 100 reps and 100,000 leads, a burst that the events' changelog writes and
    fetches queued behind; one partition's is a quarter of it."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: dict[int, float] = {}  # partition -> when last sent in full

    def due(self, partitions: Collection[int], now: float, everything: bool = False) -> set[int]:
        """The partitions to send in full now (all with ``everything``)."""
        for p in [p for p in self._last if p not in partitions]:
            del self._last[p]
        for p in partitions:
            self._last.setdefault(p, now)  # new here: its first round is full anyway
        if everything:
            self._last.update(dict.fromkeys(partitions, now))
            return set(partitions)
        late = [(when, p) for p, when in self._last.items() if now - when > self.period]
        if not late:
            return set()
        _, oldest = min(late)
        self._last[oldest] = now
        return {oldest}


class PartialsInbox:
    """The owner side's intake: applies the published messages to its table in order, and
    ends each sweep by dropping the summaries of its partition that were not sent again
    between its markers (left by an earlier owner of that partition)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        # (partition of the topic, source partition) -> (token, keys sent since the begin)
        self._sweeps: dict[tuple[int, int], tuple[bytes, set[bytes]]] = {}

    def apply(
        self, table: MutableMapping[bytes, bytes], messages: Iterable[tuple[bytes, bytes, int]]
    ) -> dict[tuple[bytes, int], bytes | None]:
        """Apply the messages (key, value, topic partition) in order; returns what the
        table's changelog must get, per (key, partition): the latest value, None deleted.

        A value the table holds already is not written again: the changelog has it (the
        table is what its changelog says). A full round re-sends every summary (~8 MB at
        100 reps and 100,000 leads), and writing them all again held up the fetch loop.
        """
        writes: dict[tuple[bytes, int], bytes | None] = {}
        for key, value, partition in messages:
            if key.startswith(SWEEP) and key[len(SWEEP) :].isdigit():
                self._mark(table, int(key[len(SWEEP) :]), value, partition, writes)
                continue
            if not is_partial_key(key):
                # not from a worker: in the table, its key would fail every sweep and refresh
                log.warning("partials: skipped a message that is not a summary (key %r)", key[:80])
                continue
            if value and table.get(key) != value:
                table[key] = value
                writes[(key, partition)] = value
            elif not value and key in table:
                del table[key]
                writes[(key, partition)] = None
            sweep = self._sweeps.get((partition, source_of(key)))
            if sweep is not None:
                sweep[1].add(key)
        return writes

    @staticmethod
    def unwritten(
        table: MutableMapping[bytes, bytes], writes: Mapping[tuple[bytes, int], bytes | None]
    ) -> None:
        """The changelog write of ``writes`` failed: drop their keys from the table, so that
        the messages, read again, are applied (and written) again rather than found there."""
        for key, _ in writes:
            table.pop(key, None)

    def reset(self) -> None:
        """Forget sweeps under way (a rebalance: their messages may go to another owner);
        the next full round of their partition sweeps again."""
        self._sweeps.clear()

    def _mark(
        self,
        table: MutableMapping[bytes, bytes],
        source: int,
        value: bytes,
        partition: int,
        writes: dict[tuple[bytes, int], bytes | None],
    ) -> None:
        phase, _, token = value.partition(b" ")
        if phase == BEGIN:
            self._sweeps[(partition, source)] = (token, set())
            return
        sweep = self._sweeps.pop((partition, source), None)
        if sweep is None or sweep[0] != token:
            return  # its begin went to another owner, or another round began since
        stale = [
            key
            for key in table
            if is_partial_key(key)
            and key not in sweep[1]
            and source_of(key) == source
            and owner_partition(owner_of(key), self.partitions) == partition
        ]
        for key in stale:
            del table[key]
            writes[(key, partition)] = None


class PartialsView:
    """The owner side: merged summaries of the owner keys this worker owns.

    A key's partials are decoded from the table's bytes when it is merged again, and not
    kept decoded (they held ~24 MiB at 100 reps and 100,000 leads); decoding is cheap, the
    value multisets being arrays (``encode``). The merged summaries keep their multisets
    frozen (``SortedValues``): as dicts they held another ~23 MiB.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        # owner key -> (the raw partials it was merged from, the merged summary)
        self._merged: dict[str, tuple[tuple[bytes, ...], Summary]] = {}
        self._rows: dict[str, tuple[bytes, ...]] = {}

    def owned(
        self, table: Mapping[bytes, bytes], owned_partitions: set[int]
    ) -> dict[str, list[Summary]]:
        """Per owned key, its partial summaries, decoded."""
        rows = self._owned_rows(table, owned_partitions)
        return {key: [decode(raw) for raw in raws] for key, raws in rows.items()}

    def merged(
        self, table: Mapping[bytes, bytes], owned_partitions: set[int]
    ) -> dict[str, Summary]:
        """Per owned key, its partials merged. A key whose partials are the same as at the
        last call keeps its merged summary (so: read it, do not change it)."""
        for _ in self.refresh(table, owned_partitions):
            pass
        return {key: self._merged[key][1] for key in self._rows}

    def current(self, owned_partitions: set[int]) -> dict[str, Summary]:
        """``merged`` as of the last refresh, without merging anything: for reads (scrapes,
        rounds), which would otherwise merge in one go what the partials route applied
        since the last refresh (the next round's refresh does, in steps)."""
        partitions = self.partitions
        return {
            key: summary
            for key, (_, summary) in self._merged.items()
            if owner_partition(key, partitions) in owned_partitions
        }

    def refresh(self, table: Mapping[bytes, bytes], owned_partitions: set[int]) -> Iterator[None]:
        """Merge again the keys whose partials changed, yielding None after each partial
        decoded and each series merged: there the caller may let the event loop run. Then
        ``merged`` with the same table answers from the cache."""
        rows = self._rows = self._owned_rows(table, owned_partitions)
        for owner_key, sources in rows.items():
            merged = self._merged.get(owner_key)
            # equal bytes (a full round re-sends them) need no merging again
            if merged is None or merged[0] != sources:
                decoded = []
                for raw in sources:
                    try:
                        decoded.append(decode(raw))
                    except Exception as exc:  # any error of unknown bytes: see _undecodable
                        _undecodable(owner_key, raw, exc)
                    yield None
                whole = yield from merging(decoded)
                self._merged[owner_key] = (sources, whole)
        for owner_key in [k for k in self._merged if k not in rows]:
            del self._merged[owner_key]

    def _owned_rows(
        self, table: Mapping[bytes, bytes], owned_partitions: set[int]
    ) -> dict[str, tuple[bytes, ...]]:
        """Per owned key, the bytes of its partials (in the table's order)."""
        rows: dict[str, list[bytes]] = {}
        for key, raw in list(table.items()):
            if not raw or not is_partial_key(key):
                continue  # a stranger's key, from a changelog written before the inbox checked
            owner_key = owner_of(key)
            if owner_partition(owner_key, self.partitions) in owned_partitions:
                rows.setdefault(owner_key, []).append(raw)
        return {key: tuple(raws) for key, raws in rows.items()}


def _undecodable(owner_key: str, raw: bytes, exc: Exception) -> None:
    """A partial that does not decode is left out of its key's merge (logged once: the key
    is merged again only when its partials change). Only a worker writes the topic, so this
    is a bug or a stranger's message; the next full round of its partition replaces it."""
    log.warning(
        "partials: a summary for %s does not decode (%d bytes, %r): left out",
        owner_key,
        len(raw),
        exc,
    )
