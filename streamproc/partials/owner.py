"""The owner side of the partials: the inbox applies what workers publish (ending sweeps),
the view merges each owned key's partials into the summary its whole metrics read."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from functools import partial

from streamproc.kpis.compute import Summary
from streamproc.partials.codec import (
    BEGIN,
    SWEEP,
    decode,
    is_partial_key,
    owner_of,
    owner_partition,
    source_of,
)
from streamproc.partials.codec import (
    merged as merged_summary,
)

__all__ = ["PartialsInbox", "PartialsView"]

log = logging.getLogger(__name__)


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
                whole = yield from merged_summary(sources, partial(_undecodable, owner_key))
                self._merged[owner_key] = (sources, whole)
            else:  # the table's bytes, not equal ones read apart (a view merged ahead)
                self._merged[owner_key] = (sources, merged[1])
        for owner_key in [k for k in self._merged if k not in rows]:
            del self._merged[owner_key]

    def merged_keys(self) -> frozenset[str]:
        """The owner keys merged here (owned or not: those not owned go at the next
        refresh)."""
        return frozenset(self._merged)

    def adopt(self, ahead: PartialsView) -> None:
        """Take what ``ahead`` merged (from the data dir, before the assignment) for the
        keys not merged here: all of it at a start, the partitions a hand-over brings
        otherwise. The next ``refresh`` merges again only the keys whose partials differ
        from those, and drops the keys not owned."""
        if not self._merged:
            self._merged, self._rows = ahead._merged, ahead._rows
            return
        for owner_key, merged in ahead._merged.items():
            self._merged.setdefault(owner_key, merged)

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
