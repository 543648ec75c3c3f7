"""``streamproc simulate``: a simulated sales team's events, sent as they happen, after its
recent past when asked (``history``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import TextIO

from streamproc.config import Settings
from streamproc.kafka.producer import EventProducer
from streamproc.tools.progress import Progress
from streamproc.tools.sales_team import History, SalesTeam, SimEvent
from streamproc.tools.targets import plausible_targets, publish_targets

__all__ = [
    "DEMO_PACE",
    "DEMO_RESPONSE_SCALE",
    "demo_history",
    "run_simulation",
    "run_team",
    "send_past",
]

log = logging.getLogger(__name__)

DEMO_PACE = 150.0
"""A life in the demo: ~65 min from first conversation to the deal's close (about a week at
pace 1), so deals are won and lost while someone watches."""
DEMO_RESPONSE_SCALE = 0.1
"""The demo's reps answer a new lead in 6 s to 12 min (median; real floors: 1 min to 2 h),
so that at a lead every 2.5 s about a hundred wait, not 1,400 (measured at 10 events/s and
real response times: 1,436 waiting, 1,201 past a 5-minute SLA); its readers open an email
after 2 min (median; real: 20), so that an hour of sends is mostly opened when the demo
starts (at 20 min, today's open ratios read 0.08-0.21 on first look; the team's is ~0.4)."""
WARM_EVENTS = 40_000.0
"""At most this many events of pre-fill at the live rate (a backfill of seconds)."""
QUIET_LEADS_PER_REP_DAY = 12.0
"""The realistic team of the history: ~100 leads a day for 8 reps."""


SEASONALITY = 0.3


def demo_history(rate: float, reps: int, days: float) -> History:
    """The past a demo or ``simulate --history-days`` starts from: ``days`` of a realistic
    floor, then up to an hour at ``rate`` (``WARM_EVENTS`` at most)."""
    return History(
        days=days,
        leads_per_day=QUIET_LEADS_PER_REP_DAY * reps,
        warm_seconds=min(3600.0, WARM_EVENTS / rate),
        # A deal takes about a week at pace 1: over a short history, quicker, so that deals
        # are won and lost within it (7 days: ~1.6 days from first conversation to close).
        pace=max(1.0, 30.0 / days),
        # a quarter or more of history: its seasons too (a year: November 30 % busier
        # than the average, May 30 % quieter)
        seasonality=SEASONALITY if days >= 90 else 0.0,
    )


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
    history_days: float = 0.0,
    targets: bool = False,
) -> int:
    """Send a simulated team's events as they happen, until ``duration`` or ``stop``; with
    ``history_days``, its past first, as fast as the broker takes it.

    Each ``step`` seconds, the events whose ``occurred_at`` has passed are sent (event time is
    the wall clock). Returns the number of events sent. A given ``producer`` must be started
    by the caller and is left running. ``targets``: first publish a plausible set of targets
    for the team (``plausible_targets``), so that every target panel shows data.
    """
    history = demo_history(rate, reps, history_days) if history_days > 0 else None
    # Drawing the team pre-fills its pipeline (up to a second or two): not on the event loop.
    team = await asyncio.to_thread(
        SalesTeam.for_rate,
        settings,
        rate,
        reps,
        seed,
        start=time.time(),
        scramble=scramble,
        pace=DEMO_PACE if history is not None else None,
        history=history,
        response_scale=DEMO_RESPONSE_SCALE if history is not None else 1.0,
        outcomes=True,
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
        return await _past_then_live(team, producer, duration, stop, step, log_every)
    async with EventProducer(settings) as own:
        return await _past_then_live(team, own, duration, stop, step, log_every)


async def _past_then_live(
    team: SalesTeam,
    producer: EventProducer,
    duration: float | None,
    stop: asyncio.Event | None,
    step: float,
    log_every: float,
) -> int:
    # the past in time order, then the invoices (recorded at the start: "now")
    sent = await send_past(team.past_events() + team.invoices(), producer, stream=sys.stderr)
    return sent + await run_team(team, producer, duration, stop, step=step, log_every=log_every)


async def send_past(
    past: list[SimEvent], producer: EventProducer, *, stream: TextIO, label: str = "history"
) -> int:
    """Send a team's ``past_events()`` as fast as the producer goes, with a progress bar on
    ``stream``; the number sent."""
    if not past:
        return 0
    bar = Progress(len(past), stream=stream, label=label)
    for i, (kind, event) in enumerate(past, 1):
        await producer.send(kind, event)
        if i % 500 == 0:
            bar.update(500)
            await asyncio.sleep(0)  # let the producer's sender task run
    await producer.flush()
    bar.update(len(past) - bar.count)
    bar.close()
    return len(past)


async def run_team(
    team: SalesTeam,
    producer: EventProducer,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    *,
    step: float = 0.05,
    log_every: float = 10.0,
) -> int:
    """Send the team's events from its start as their time comes (those already due at
    once), until ``duration`` after its start or ``stop``; the number sent."""
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
