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

The bytes: ``orjson.dumps`` returns a bytes object that keeps the whole buffer it was
written in, at least 4 KiB whatever the length (100,000 dumps of 401 bytes held 784 MiB of
RSS; their copies 80 MiB). Bytes that are kept (packed leads, what was last sent per series)
are copied to their length first: ``json_to_keep``.
"""

from __future__ import annotations

import gc
from typing import Any

import orjson

__all__ = ["freeze_after_full_collections", "json_to_keep"]

_OLDEST = 2


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == _OLDEST:
        gc.freeze()


def freeze_after_full_collections() -> None:
    """From now on, freeze what survives each full collection (idempotent)."""
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def json_to_keep(obj: Any, option: int | None = None) -> bytes:
    """``orjson.dumps`` trimmed to its length: for bytes that stay in memory."""
    return bytes(memoryview(orjson.dumps(obj, option=option)))
