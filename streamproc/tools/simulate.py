"""``streamproc simulate``: a simulated sales team's events, sent as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from streamproc.config import Settings
from streamproc.kafka.producer import EventProducer
from streamproc.tools.sales_team import SalesTeam
from streamproc.tools.targets import plausible_targets, publish_targets

__all__ = ["run_simulation"]

log = logging.getLogger(__name__)


async def run_simulation(
    settings: Settings,
    rate: float,
    reps: int = 8,
    seed: int = 0,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    *,
    producer: EventProducer | None = None,
    step: float = 0.05,
    log_every: float = 10.0,
    scramble: bool = False,
    targets: bool = False,
) -> int:
    """Send a simulated team's events as they happen, until ``duration`` or ``stop``.

    Each ``step`` seconds, the events whose ``occurred_at`` has passed are sent (event time is
    the wall clock). Returns the number of events sent. A given ``producer`` must be started
    by the caller and is left running. ``targets``: first publish a plausible set of targets
    for the team (``plausible_targets``), so that every target panel shows data.
    """
    # Drawing the team pre-fills its pipeline (up to a second or two): not on the event loop.
    team = await asyncio.to_thread(
        SalesTeam.for_rate, settings, rate, reps, seed, start=time.time(), scramble=scramble
    )
    log.info(
        "simulating %d reps at %.1f events/s (%.2f leads/s, pace %.0f) to %s",
        reps,
        rate,
        team.lead_rate,
        team.pace,
        settings.broker_hosts,
    )
    if targets:
        reps_ids = [rep.rep_id for rep in team.reps]
        sent = await publish_targets(settings, plausible_targets(reps_ids, team.lead_rate))
        log.info("published %d targets (streamproc targets list shows them)", sent)
    if producer is not None:
        return await _produce(team, producer, duration, stop, step, log_every)
    async with EventProducer(settings) as own:
        return await _produce(team, own, duration, stop, step, log_every)


async def _produce(
    team: SalesTeam,
    producer: EventProducer,
    duration: float | None,
    stop: asyncio.Event | None,
    step: float,
    log_every: float,
) -> int:
    end = None if duration is None else team.start + duration
    cursor, count = team.start, 0
    next_log = time.monotonic() + log_every
    while True:
        now = time.time()
        upto = now if end is None else min(now, end)
        for kind, event in team.events_between(cursor, upto):
            await producer.send(kind, event)
            count += 1
        cursor = max(cursor, upto)
        if (end is not None and upto >= end) or (stop is not None and stop.is_set()):
            break
        if time.monotonic() >= next_log:
            next_log += log_every
            log.info("simulation: %d events sent (%.1f/s)", count, count / (now - team.start))
        await _pause(stop, step)
    await producer.flush()
    log.info("simulation done: %d events sent", count)
    return count


async def _pause(stop: asyncio.Event | None, seconds: float) -> None:
    """Sleep, but wake at once when ``stop`` is set."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
