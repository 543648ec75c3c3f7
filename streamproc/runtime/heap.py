"""Long-lived state and the heap: the garbage collector kept off it, its bytes trimmed.

The collector:

A worker holds millions of small objects that live for days (lead states, their events,
window buckets) and makes almost no reference cycles. CPython still walks all of them in
every full collection: at 20,000 leads these took 0.1 - 0.5 s each, every 2 - 5 s, found
next to nothing (0 - 6 objects), and held the event loop meanwhile (p99 delay of events
2 s). After a full collection the survivors are frozen (``gc.freeze``): later collections
walk only what was allocated since. Frozen objects are still freed by reference counting
(an evicted lead goes at once); only a cycle that was alive at a freeze and dies later is
never collected.

The young generation: at CPython's default (a collection every 700 allocations more than
deallocations), the engine's batches, whose leads' items and facts live until the batch
ends, set off ~6,300 young and ~50 full collections in 300,000 events of the bench
history: 2.6 - 2.9 s of ~20 s in-process. Every 10,000 (``YOUNG_THRESHOLD``): 120 and 1,
1.0 s; the objects a collection walks are those still alive, so fewer, larger ones walk
fewer in all (the batch's own have died by then).

The bytes: ``orjson.dumps`` returns a bytes object that keeps the whole buffer it was
written in, at least 4 KiB whatever the length (100,000 dumps of 401 bytes held 784 MiB of
RSS; their copies 80 MiB), and zstd's the buffer it sized for the worst case. Bytes that
are kept (packed leads, the partials a worker sends and keeps) are copied to their length
first: ``to_keep``, ``json_to_keep``.

The allocator: glibc keeps the pages of freed blocks inside its heap. A worker catching
up 1,000,000 events had 220 MiB of heap of which 51 MiB free, and pages come back to the
system only from its top. ``malloc_trim`` hands back every free page in it; a thread calls
it every 2 s (ctypes releases the GIL: the event loop is not held). Peak RSS of the
1,000,000-event bench: 401 MiB with it, 432 without (one run each, same code).

The mmap threshold: glibc serves a block above it with its own mapping, returned whole on
free, and raises the threshold to the size of each such block freed (up to 32 MiB). The
fetched Kafka responses (~0.7 MiB each) raised it at once, and from then on they and every
large buffer came from the heap, between long-lived blocks: a worker building 300,000
leads peaked at 411.6 MiB, 369.7 MiB with the threshold fixed at 256 KiB (one run each,
the same history, quiet machine; its build 195 s against 171 s, within the day's spread).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

__all__ = [
    "YOUNG_THRESHOLD",
    "collect_young_less_often",
    "collections_paused",
    "fix_mmap_threshold",
    "freeze_after_full_collections",
    "json_to_keep",
    "start_heap_trimmer",
    "to_keep",
]

log = logging.getLogger(__name__)
TRIM_SECONDS = 2.0
MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)

_OLDEST = 2
YOUNG_THRESHOLD = 10_000


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == _OLDEST:
        gc.freeze()


def freeze_after_full_collections() -> None:
    """From now on, freeze what survives each full collection (idempotent)."""
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def collect_young_less_often() -> None:
    """Collect the young generation every ``YOUNG_THRESHOLD`` allocations, not 700."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)


@contextmanager
def collections_paused() -> Iterator[None]:
    """No cycle collection while many acyclic objects are built in one go (a history, a
    recovered state): the collector rescans the growing pile over and over otherwise (a
    restart's recovery of 100,000 leads: 2 - 3x slower)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def json_to_keep(
    obj: Any, option: int | None = None, default: Callable[[Any], Any] | None = None
) -> bytes:
    """``orjson.dumps`` trimmed to its length: for bytes that stay in memory."""
    return to_keep(orjson.dumps(obj, default=default, option=option))


def to_keep(data: bytes) -> bytes:
    """``data`` copied to its length: orjson's and zstd's bytes keep the whole buffer they
    were written in (zstd's is sized for the worst case: ~930 bytes held for ~200 used)."""
    return bytes(memoryview(data))


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Serve blocks of ``size`` bytes and more from their own mappings, always (glibc's
    ``mallopt``); False where the C library has none (not glibc)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        log.info("no glibc mallopt: the mmap threshold is the C library's")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


def start_heap_trimmer(interval: float = TRIM_SECONDS) -> threading.Thread | None:
    """Return free heap pages to the system every ``interval`` seconds, from a daemon
    thread; None where the C library has no ``malloc_trim`` (not glibc)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        log.info("no glibc malloc_trim: free heap pages stay with the process")
        return None
    trim.argtypes = [ctypes.c_size_t]

    def run() -> None:
        while True:
            time.sleep(interval)
            trim(0)

    thread = threading.Thread(target=run, name="heap-trimmer", daemon=True)
    thread.start()
    return thread
