"""The publishing side of the partials: what changed per (owner key, partition), sent oldest
change first within a byte budget, and which partitions a round sends in full."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterable, Iterator, Mapping

from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.windows import WindowClock
from streamproc.kpis.compute import Summary, owner_keys_of, summaries_in_steps
from streamproc.partials.codec import (
    BEGIN,
    END,
    SWEEP,
    Message,
    Sent,
    encode,
    message_key,
    owner_partition,
)

__all__ = ["FullRounds", "PartialsPublisher"]


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
