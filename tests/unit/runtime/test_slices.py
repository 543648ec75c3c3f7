"""A scrape goes before the other sliced work: they wait for it at their pauses."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamproc.runtime import slices
from streamproc.runtime.slices import SLICE_SECONDS, Stretches, reading


async def _background(steps: list[str], n: int) -> None:
    """A publish round, a prune or a sink's fold: stretches with pauses between them."""
    busy = Stretches()
    for i in range(n):
        with busy:
            time.sleep(SLICE_SECONDS)
        steps.append(f"round {i}")
        await busy.pause()


async def _scrape(steps: list[str], n: int) -> None:
    busy = Stretches(first=True)
    with reading():
        for i in range(n):
            with busy:
                time.sleep(SLICE_SECONDS)
            steps.append(f"scrape {i}")
            await busy.pause()


async def test_other_sliced_work_waits_at_its_pauses_for_the_scrape_under_way() -> None:
    steps: list[str] = []
    round_ = asyncio.create_task(_background(steps, 3))
    await asyncio.sleep(0)  # the round's first stretch, then its pause
    await _scrape(steps, 5)
    await round_
    assert steps == [
        "round 0",
        *(f"scrape {i}" for i in range(5)),  # the scrape's pauses let nothing else go
        "round 1",
        "round 2",
    ]
    assert not slices._reads, "the scrape is over"


async def test_a_scrape_longer_than_the_wait_lets_the_rest_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slices, "READ_WAIT_SECONDS", 5 * SLICE_SECONDS)
    steps: list[str] = []
    round_ = asyncio.create_task(_background(steps, 2))
    await asyncio.sleep(0)
    scrape = asyncio.create_task(_scrape(steps, 40))
    await asyncio.gather(round_, scrape)
    assert steps.index("round 1") < steps.index("scrape 39"), steps


async def test_scrapes_back_to_back_hold_a_task_up_for_the_wait_in_all_not_at_each_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round of ~150 stretches behind scrapes that never stop (dashboards, probes): up to
    a second at each pause would make it minutes long."""
    monkeypatch.setattr(slices, "READ_WAIT_SECONDS", 0.05)
    steps: list[str] = []
    stop = asyncio.Event()

    async def scrapes() -> None:
        while not stop.is_set():
            await _scrape([], 40)  # ~80 ms each: at each pause, ~2.4 s for the round

    scraping = asyncio.create_task(scrapes())
    await asyncio.sleep(0)
    started = time.monotonic()
    await _background(steps, 30)
    took = time.monotonic() - started
    stop.set()
    await scraping
    # 30 stretches of 2 ms, as many of the scrapes' between them, 0.05 s of waiting at most
    assert took < 0.6, f"the round took {took:.2f} s"


async def test_a_scrape_that_fails_is_not_waited_for() -> None:
    with pytest.raises(RuntimeError), reading():
        raise RuntimeError("a rebalance changed the state")
    steps: list[str] = []
    started = time.monotonic()
    await _background(steps, 3)
    assert steps == ["round 0", "round 1", "round 2"]
    assert time.monotonic() - started < slices.READ_WAIT_SECONDS / 2
