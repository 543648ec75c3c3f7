"""Long synchronous work in slices, so that the events sharing the loop wait ~2 ms at most.

One worker runs everything on one event loop: the batch handler, the publish rounds, the
scrapes, the sinks and the SLA timer. A step that holds the loop for tens of milliseconds
delays every event behind it, and steps of 30 - 150 ms (a partition's summaries, a sink's
snapshot fold, a scrape's formatting) were the tail of the end-to-end latency. Work that
grows with the leads or series is written as an iterator and run through ``Stretches``.

Between two stretches a task sleeps a slice, rather than going straight to the back of the
loop's ready queue: each step of a batch of events (a fetch, a changelog round trip) then
waits behind one stretch at most, and the loop's thread leaves the interpreter to the
consumer's thread (Faust runs aiokafka's fetcher in a thread of its own) in between.
Yielding with ``sleep(0)`` whenever no batch was in hand left p99 latency at 385 and 442 ms
(two runs at 1,000 events/s and 100,000 leads); sleeping a slice, 211 and 238 ms.

While no event has come for ``QUIET_SECONDS`` (``events_seen``), nothing waits for the
loop but what is ready in it: a task then only yields (``sleep(0)``) between stretches,
rather than leaving the loop idle half of the time. A take-over's recovery and first
scrape run with no event in hand (the restart's first exact scrape of 100,000 leads took
1.15 s sliced, for ~0.5 s of CPU).

A scrape (``reading``) goes before the other sliced work: at their pauses, publish rounds,
prunes and the sinks' folds wait for the scrapes under way (``READ_WAIT_SECONDS`` in all
for each such task, so scrapes back to back do not stall it), while events still run
between the scrape's own stretches. A take-over's first scrape
otherwise shared the loop with the first publish round, which computes every owned series
for the sinks: 0.34 - 0.88 s for ~0.3 s of its own CPU at 100,000 leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Generator, Iterator
from typing import TypeVar

__all__ = [
    "QUIET_SECONDS",
    "READ_WAIT_SECONDS",
    "SLICE_SECONDS",
    "Stretches",
    "at_once",
    "events_seen",
    "reading",
    "run_in_slices",
]

_T = TypeVar("_T")

# The longest stretch of a publish round, scrape, prune or sink fold without yielding the
# loop. 2 ms rather than 10: 12,238 and 13,260 events/s over the 1,000,000-event history
# against 10,479 - 11,528 (one worker; p99 latency unchanged within its noise).
SLICE_SECONDS = 0.002
QUIET_SECONDS = 1.0  # no event for this long: stretches yield without sleeping
_last_events = -math.inf  # monotonic: when a batch of events last came
# The longest a task's pauses wait for scrapes, in all: a whole scrape at 1,000,000 leads
# takes ~1 s, and a round (~150 stretches at 100,000 leads) must not wait up to that long
# at each of its pauses behind scrapes back to back.
READ_WAIT_SECONDS = 1.0
_reads: set[asyncio.Event] = set()  # the scrapes under way (``reading``), set when done


def events_seen() -> None:
    """A batch of events came (the batch handler's call): for ``QUIET_SECONDS`` from now,
    stretches sleep a slice between them."""
    global _last_events
    _last_events = time.monotonic()


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """A scrape under way (in a coroutine): the other sliced work waits for it at its
    pauses."""
    done = asyncio.Event()
    _reads.add(done)
    try:
        yield
    finally:
        _reads.discard(done)
        done.set()


async def _after_reads(at_most: float) -> None:
    """Wait for the scrapes under way, ``at_most`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(at_most):
            for done in list(_reads):
                await done.wait()


def _gap() -> float:
    """How long a task sleeps between its stretches now."""
    return SLICE_SECONDS if time.monotonic() - _last_events < QUIET_SECONDS else 0.0


class Stretches:
    """Times the synchronous stretches of a task (``with``) and yields the loop between them
    once they add up to ``SLICE_SECONDS`` (``pause``), so events and alerts run in between.
    Unless ``first`` (a scrape's own, or what a scrape waits for: the recovery's refresh of
    the view), the pauses also wait for the scrapes under way (``reading``),
    ``READ_WAIT_SECONDS`` in all."""

    def __init__(self, first: bool = False) -> None:
        self.first = first
        self.total = 0.0
        self._waited = 0.0  # for scrapes, in all
        self._since_pause = 0.0
        self._entered = 0.0

    def __enter__(self) -> None:
        self._entered = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        spent = time.perf_counter() - self._entered
        self.total += spent
        self._since_pause += spent

    async def pause(self) -> None:
        if self._since_pause >= SLICE_SECONDS:
            self._since_pause = 0.0
            await asyncio.sleep(_gap())
            if _reads and not self.first and self._waited < READ_WAIT_SECONDS:
                began = time.monotonic()
                await _after_reads(READ_WAIT_SECONDS - self._waited)
                self._waited += time.monotonic() - began

    async def drain(self, items: Iterator[_T]) -> list[_T]:
        """All of ``items``, the loop yielded whenever a stretch reaches ``SLICE_SECONDS``."""
        out: list[_T] = []
        while True:
            with self:
                end = time.perf_counter() + SLICE_SECONDS
                for item in items:
                    out.append(item)
                    if time.perf_counter() >= end:
                        break
                else:
                    return out
            await self.pause()


async def run_in_slices(steps: Generator[object, None, _T]) -> _T:
    """Run ``steps`` to its end, yielding the loop between slices; returns its value (what
    it yields is dropped)."""
    busy = Stretches()
    while True:
        with busy:
            end = time.perf_counter() + SLICE_SECONDS
            try:
                while time.perf_counter() < end:
                    next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        await busy.pause()


def at_once(steps: Generator[object, None, _T]) -> _T:
    """The return value of a stepped generator, run without pauses (tests, small inputs)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
