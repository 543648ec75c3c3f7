"""The SLA-watch timer: a stopped producer ends the round, not the worker; batches go on
while a round is in flight, and a rebalance waits for both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.exceptions import NotReady

from streamproc.config import Settings
from streamproc.worker.topology import Topology


async def test_a_producer_stopped_under_an_alert_round_does_not_crash_the_timer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    topology.ready = True
    calls = []

    async def stopped_producer(leads: object, now: float) -> None:
        calls.append(now)
        raise NotReady("Producer service not yet started")

    topology.alerts.publish_due = stopped_producer  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="streamproc.worker.topology"):
        await topology._check_alerts()  # a timer exception would stop the worker
    assert calls, "the round did not run"
    assert "producer has stopped" in caplog.text
    assert not topology.state_lock.reader.locked

    async def broken(leads: object, now: float) -> None:
        raise RuntimeError("a bug")

    topology.alerts.publish_due = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await topology._check_alerts()  # anything else still surfaces


async def test_batches_go_on_while_an_alert_round_is_in_flight_and_a_rebalance_waits(
    tmp_path: Path,
) -> None:
    """An alert round awaits two round trips (the alerts, then the leads' changelog): the
    batches need not wait for them. A rebalance waits for every change in flight."""
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    topology.ready = True
    in_round, release = asyncio.Event(), asyncio.Event()

    async def slow_round(leads: object, now: float) -> None:
        in_round.set()
        await release.wait()  # the alerts' and the changelog's round trips

    async def apply(batch: list[object]) -> list[object]:
        await asyncio.sleep(0)  # the batch's own changelog write
        return batch

    topology.alerts.publish_due = slow_round  # type: ignore[method-assign]
    topology.events.apply = apply  # type: ignore[method-assign,assignment]
    alert_round = asyncio.create_task(topology._check_alerts())
    await asyncio.wait_for(in_round.wait(), 1)
    assert await asyncio.wait_for(topology.events.apply_locked([]), 1) == [], "held up by the round"
    revoking = asyncio.create_task(topology._on_revoked(topology.app))
    await asyncio.sleep(0.05)
    assert not revoking.done() and topology.ready, "the rebalance went ahead of the round"
    later_batch = asyncio.create_task(topology.events.apply_locked([]))
    await asyncio.sleep(0.05)
    assert not later_batch.done(), "a batch went ahead of the waiting rebalance"
    release.set()
    await asyncio.wait_for(asyncio.gather(alert_round, revoking, later_batch), 1)
    assert not topology.ready
