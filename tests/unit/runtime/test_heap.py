"""Heap policy: survivors of a full collection are frozen; kept JSON bytes are trimmed."""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator

import orjson
import pytest

from streamproc.runtime.heap import (
    YOUNG_THRESHOLD,
    _freeze_survivors,
    collect_young_less_often,
    collections_paused,
    freeze_after_full_collections,
    json_to_keep,
)


@pytest.fixture
def policy() -> Iterator[None]:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    while _freeze_survivors in gc.callbacks:
        gc.callbacks.remove(_freeze_survivors)
    gc.unfreeze()


def test_survivors_of_a_full_collection_are_frozen(policy: None) -> None:
    leads = [[i] for i in range(10_000)]  # tracked, long-lived
    freeze_after_full_collections()
    freeze_after_full_collections()
    assert gc.callbacks.count(_freeze_survivors) == 1
    gc.collect()
    assert gc.get_freeze_count() >= len(leads)
    walked = {id(o) for o in gc.get_objects(2)}
    assert not any(id(lead) in walked for lead in leads), "frozen objects are still walked"


def test_the_young_generation_is_collected_less_often(policy: None) -> None:
    collect_young_less_often()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD > 700  # CPython's default: 700


def test_young_collections_freeze_nothing(policy: None) -> None:
    freeze_after_full_collections()
    gc.collect(0)
    gc.collect(1)
    assert gc.get_freeze_count() == 0


def _held_bytes(make: object) -> float:
    """Bytes traced per object for 200 objects made by ``make`` and kept."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(200)]  # type: ignore[operator]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 200
    return held / 200


def test_kept_json_holds_its_length_not_orjsons_buffer() -> None:
    body = {"value": 1.5, "labels": {"rep": "r1", "window": "1h"}}
    assert json_to_keep(body) == orjson.dumps(body)
    assert json_to_keep(body, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        body, option=orjson.OPT_SORT_KEYS
    )
    size = len(orjson.dumps(body))
    # The premise: orjson's own bytes hold a buffer of 4 KiB or more (if a new orjson trims
    # them, json_to_keep is a copy too many and can go).
    assert _held_bytes(lambda: orjson.dumps(body)) >= 4096
    assert _held_bytes(lambda: json_to_keep(body)) < size + 100


_FREED_UNDER_A_KEPT_BLOCK = """
import time
from streamproc.runtime.heap import start_heap_trimmer

def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

blocks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MiB in the heap, not mmap
kept = blocks[-1]  # the heap's top stays in use: free pages below it stay resident
del blocks
before = rss()
assert start_heap_trimmer(interval=0.05) is not None
time.sleep(0.5)
print(before, rss())
"""


def test_the_trimmer_hands_free_heap_pages_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FREED_UNDER_A_KEPT_BLOCK],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, after = map(int, done.stdout.split())
    assert before - after > 100, (before, after)


_LARGE_BLOCK_MAPPED = """
import ctypes, sys
from streamproc.runtime.heap import fix_mmap_threshold
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
first = bytearray(1 << 20)  # mapped, then freed: glibc raises its threshold to 1 MiB
del first
before = libc.mallinfo2().hblkhd
response = bytearray(600 << 10)  # a fetched response's size
print(libc.mallinfo2().hblkhd - before >= 600 << 10)
"""


@pytest.mark.parametrize(("threshold", "mapped"), [("fixed", "True"), ("glibc's", "False")])
def test_a_large_block_keeps_its_own_mapping_with_the_threshold_fixed(
    threshold: str, mapped: str
) -> None:
    """glibc's own threshold follows the largest mapped block freed: a 600 KiB buffer after
    a 1 MiB one comes from the heap, between long-lived blocks. Fixed: mapped, always."""
    done = subprocess.run(
        [sys.executable, "-c", _LARGE_BLOCK_MAPPED, threshold],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == mapped, done


def test_no_collection_while_paused_and_the_collector_as_it_was_after() -> None:
    assert gc.isenabled()
    with collections_paused():
        assert not gc.isenabled()
        with collections_paused():
            pass
        assert not gc.isenabled(), "a nested pause ended the outer one"
    assert gc.isenabled()
    gc.disable()
    try:
        with collections_paused():
            pass
        assert not gc.isenabled(), "a pause turned on a collector that was off"
    finally:
        gc.enable()
