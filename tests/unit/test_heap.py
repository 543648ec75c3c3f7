"""The worker's GC policy: survivors of a full collection are frozen, not walked again."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamproc.heap import _freeze_survivors, freeze_after_full_collections


@pytest.fixture
def policy() -> Iterator[None]:
    gc.unfreeze()
    yield
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


def test_young_collections_freeze_nothing(policy: None) -> None:
    freeze_after_full_collections()
    gc.collect(0)
    gc.collect(1)
    assert gc.get_freeze_count() == 0
