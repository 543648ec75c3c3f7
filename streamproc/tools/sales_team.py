"""A synthetic sales team emitting contract-valid CRM events, deterministic for a seed."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
import zlib
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from statistics import NormalDist
from typing import Any, NamedTuple, TypeAlias

from streamproc.config import Settings
from streamproc.runtime.heap import collections_paused
from streamproc.tools.outcomes import OUTCOME_KINDS, LeadOutcomes, monthly_invoices

__all__ = [
    "CONTACT_ATTEMPTED",
    "EMAIL_OPENED",
    "KINDS",
    "LEAD_CREATED",
    "LOST_REASONS",
    "SOURCES",
    "STAGE_CHANGED",
    "History",
    "Rep",
    "SalesTeam",
    "SimEvent",
    "Source",
    "history",
    "rfc3339",
]

LEAD_CREATED = "lead-created"
CONTACT_ATTEMPTED = "contact-attempted"
STAGE_CHANGED = "stage-changed"
EMAIL_OPENED = "email-opened"
KINDS = (LEAD_CREATED, CONTACT_ATTEMPTED, STAGE_CHANGED, EMAIL_OPENED)
_TRIGGER = "trigger"  # internal: the lead's first contact is due, draw the rest of its life

SimEvent: TypeAlias = tuple[str, dict[str, Any]]
"""(event kind, e.g. ``"lead-created"``, the event as the contract's JSON object)."""
# One generated event before it becomes a dict: (time, lead-local number, kind, extra fields).
_Raw: TypeAlias = tuple[float, int, str, dict[str, Any] | None]

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class Source:
    """A lead source and how good its leads are."""

    name: str
    share: float  # of all leads
    quality: float  # multiplies the odds of moving a stage forward; 1 is average
    reach: float  # multiplies the chance that an attempt connects and an email is opened
    median_value: float  # of a deal from it, in the reporting currency


SOURCES = (
    Source("google_ads", 0.28, 1.0, 1.0, 9_000),
    Source("website", 0.16, 1.2, 1.0, 10_000),
    Source("facebook", 0.17, 0.45, 0.7, 4_500),
    Source("webinar", 0.12, 1.3, 1.15, 11_000),
    Source("referral", 0.10, 2.2, 1.4, 16_000),
    Source("linkedin", 0.10, 0.9, 0.9, 14_000),
    Source("trade_show", 0.07, 1.1, 1.2, 20_000),
)
LOST_REASONS = ("no_budget", "timing", "no_response", "competitor", "price")
# Why deals die: budget and timing early in the pipeline, price and competitors late.
_EARLY_LOSS = (0.35, 0.30, 0.20, 0.10, 0.05)
_LATE_LOSS = (0.03, 0.15, 0.07, 0.35, 0.40)
_CHANNELS = ("call", "email", "sms", "social", "other")

EXISTING_SHARE = 0.10  # leads from existing customers (upsell)
NEVER_CONTACTED = 0.02  # leads nobody ever calls: they fall through the cracks
CLEANED_UP = 0.5  # of those, the share closed lost in a later pipeline clean-up
RESPONSE_SIGMA, RESPONSE_MIN, RESPONSE_CAP = 0.8, 15.0, 8 * HOUR
# Before the first conversation: follow-up gaps, then the rep gives up (pipeline time).
REACH_GAPS = (2 * HOUR, 8 * HOUR, DAY, 2 * DAY, 3 * DAY)
GIVE_UP = 2 * DAY
DWELL = 2 * DAY  # median time in an open stage after the first conversation (pipeline time)
CAP = 3.0  # every pipeline wait is at most CAP times its median: a lead's life is bounded
OPEN_MEDIAN, OPEN_CAP = 20 * 60.0, 12 * HOUR  # send -> open, real time
REOPEN_MEDIAN, CLICK_MEDIAN, CLICK_CAP = 3 * HOUR, 40.0, HOUR
# Connect chance of one attempt before and after the first conversation ("call" before: skill).
_COLD_CONNECT = {"email": 0.08, "sms": 0.12, "social": 0.06, "other": 0.10}
_WARM_CONNECT = {"call": 0.55, "email": 0.45, "sms": 0.40, "social": 0.25, "other": 0.35}
COLD_OPEN, WARM_OPEN, COLD_CLICK, WARM_CLICK, REOPEN = 0.32, 0.62, 0.18, 0.35, 0.25
ADVANCE = 0.6  # chance an average deal moves forward from an open stage
IN_FLIGHT = 10_000  # auto pace keeps about this many leads in the pipeline at once
WARM_QUANTILE = 0.99  # pre-fill back to an age that only 1 % of events come later than
WARM_LEADS = 100_000  # at most this many leads pre-fill the pipeline (about a second)


@dataclass(frozen=True, slots=True)
class History:
    """How much past a ``SalesTeam`` keeps (see its docstring)."""

    days: float = 7.0
    """How far back the quiet team's leads arrive."""
    leads_per_day: float = 100.0
    """The quiet team's leads per day (a floor of 8 reps: ~100)."""
    warm_seconds: float = 3600.0
    """How deep the pre-fill at the live rate goes (at most)."""
    pace: float = 1.0
    """The quiet team's pace (1: a deal takes about a week from the first conversation)."""
    seasonality: float = 0.0
    """0 - 1: how much the quiet team's leads swing over the year (``season``): 0.3, from
    30 % above the average in November to 30 % below in May."""


def season(t: float, seasonality: float) -> float:
    """The lead rate's factor at ``t`` (UTC months): 1 + ``seasonality`` x a yearly cosine
    peaking in mid-November (budgets spent before the year ends) and lowest in mid-May."""
    month = datetime.fromtimestamp(t, UTC).month - 1 + 0.5
    return 1.0 + seasonality * math.cos(2 * math.pi * (month - 10.5) / 12)


@dataclass(frozen=True, slots=True)
class Rep:
    """A sales rep and their habits."""

    rep_id: str
    team_id: str
    response_median: float  # seconds from lead-created to the first attempt
    call_share: float  # the rest is mostly email: call-heavy vs email-heavy reps
    connect_skill: float  # chance a cold call is answered (before the source's reach)
    persistence: int  # attempts on an unreachable lead before giving up
    close_skill: float  # multiplies the odds of moving a deal forward
    load: float  # relative share of the leads routed to the rep
    channel_cum: tuple[float, ...]  # cumulative weights over _CHANNELS

    @classmethod
    def draw(cls, rng: random.Random, index: int, response_median: float) -> Rep:
        call = rng.uniform(0.2, 0.8)
        rest = 1.0 - call
        weights = (call, rest * 0.8, rest * 0.1, rest * 0.07, rest * 0.03)
        return cls(
            rep_id=f"rep-{index + 1:02d}",
            team_id=("team-north", "team-south")[index % 2],
            response_median=response_median,
            call_share=call,
            connect_skill=rng.uniform(0.18, 0.45),
            persistence=rng.randint(2, 6),
            close_skill=rng.uniform(0.75, 1.35),
            load=rng.uniform(0.6, 1.4),
            channel_cum=tuple(_cumulative(weights)),
        )


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _make_reps(rng: random.Random, count: int, scale: float = 1.0) -> tuple[Rep, ...]:
    """``count`` reps whose median response spreads from a minute to two hours (times
    ``scale``)."""
    if count < 1:
        raise ValueError("reps must be >= 1")
    spread = [
        scale * (60.0 * 120.0 ** (i / (count - 1)) if count > 1 else 600.0) for i in range(count)
    ]
    rng.shuffle(spread)  # the fast rep is not always rep-01
    return tuple(Rep.draw(rng, i, median) for i, median in enumerate(spread))


@lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds: ``2024-05-06T09:30:00.250+00:00``."""
    ms = int(ts * 1000.0)
    secs, frac = divmod(ms, 1000)
    day, sod = divmod(secs, 86400)
    hours, rest = divmod(sod, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{_date(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{frac:03d}+00:00"


# Standard normal quantiles: a table lookup is ~7x cheaper than random.gauss, and history()
# draws millions of waits. 4096 levels are plenty for waits that are clipped anyway.
_Z = tuple(NormalDist().inv_cdf((i + 0.5) / 4096) for i in range(4096))


def _wait(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    """A lognormal wait, clipped: waits in sales are skewed, with a long but bounded tail."""
    return min(high, max(low, median * math.exp(sigma * _Z[rng.getrandbits(12)])))


class _Lead:
    """What the arrival draws fix about a lead; the rest of its life is drawn later."""

    __slots__ = (
        "contacted",
        "created",
        "delay",
        "estimate",
        "existing",
        "idx",
        "lead_id",
        "rep",
        "source",
    )

    def __init__(
        self, idx: int, lead_id: str, created: float, rep: Rep, source: Source, existing: bool
    ) -> None:
        self.idx, self.lead_id, self.created = idx, lead_id, created
        self.rep, self.source, self.existing = rep, source, existing
        self.contacted, self.delay, self.estimate = True, 0.0, 0.0


class _Timeline:
    """One lead's events as they are drawn, numbered for their event ids."""

    __slots__ = ("events", "lead", "n")

    def __init__(self, lead: _Lead, n: int) -> None:
        self.lead, self.n = lead, n
        self.events: list[_Raw] = []

    def add(self, ts: float, kind: str, extra: dict[str, Any] | None) -> None:
        self.events.append((ts, self.n, kind, extra))
        self.n += 1


class _Model:
    """The lead life cycle: who gets the lead, how fast, how far it goes, what it is worth."""

    def __init__(
        self,
        settings: Settings,
        reps: tuple[Rep, ...],
        pace: float = 1.0,
        react: float = 1.0,
        outcomes: bool = False,
    ) -> None:
        self.reps = reps
        self.outcomes = outcomes  # segments, products, NPS and churn (``tools.outcomes``)
        self.pace = pace
        self.react = react  # scales the time a reader takes to open an email
        self.rep_cum = _cumulative([r.load for r in reps])
        self.source_cum = _cumulative([s.share for s in SOURCES])
        self.open = [s for s in settings.stages if s not in settings.closed_stages]
        self.won, self.lost = settings.won_stage, settings.lost_stage
        self.default_p = {s: settings.default_probability(s) for s in self.open}
        self.loss_cum = [self._loss_weights(i) for i in range(len(self.open))]

    def _loss_weights(self, i: int) -> list[float]:
        f = i / max(1, len(self.open) - 1)
        return _cumulative(
            [e * (1 - f) + lt * f for e, lt in zip(_EARLY_LOSS, _LATE_LOSS, strict=True)]
        )

    # Arrival: the draws of the arrival stream, in the order leads arrive.

    def arrive(self, ar: random.Random, idx: int, lead_id: str, created: float) -> _Lead:
        rep = self.reps[bisect(self.rep_cum, ar.random() * self.rep_cum[-1])]
        source = SOURCES[min(len(SOURCES) - 1, bisect(self.source_cum, ar.random()))]
        lead = _Lead(idx, lead_id, created, rep, source, ar.random() < EXISTING_SHARE)
        lead.contacted = ar.random() >= NEVER_CONTACTED
        # Referrals and customers get called back first; the rep's habit dominates.
        hurry = (0.6 if lead.existing else 1.0) * (0.7 if source.name == "referral" else 1.0)
        median = rep.response_median * hurry
        lead.delay = _wait(ar, median, RESPONSE_SIGMA, RESPONSE_MIN, RESPONSE_CAP)
        return lead

    def first(self, ar: random.Random, lead: _Lead) -> list[_Raw]:
        """lead-created and the first stage, drawn at arrival."""
        src = lead.source
        scale = 0.6 if lead.existing else 1.0  # upsells are smaller than new logos
        lead.estimate = round(_wait(ar, src.median_value * scale, 0.6, 300.0, 1e6), -1)
        created: dict[str, Any] = {"source": src.name}
        if lead.existing or ar.random() < 0.7:  # false is the default: leave it out sometimes
            created["existing_customer"] = lead.existing
        if ar.random() < 0.65:
            created["estimated_value"] = lead.estimate
        if self.outcomes:
            created |= LeadOutcomes(lead.lead_id, lead.existing).created_fields(lead.existing)
        stage = {"from_stage": None, "to_stage": self.open[0]}
        return [
            (lead.created, 0, LEAD_CREATED, created),
            (lead.created + ar.uniform(0.2, 3.0), 1, STAGE_CHANGED, stage),
        ]

    # The rest of the life: drawn when the first contact is due.

    def rest(self, rng: random.Random, lead: _Lead) -> list[_Raw]:
        tl = _Timeline(lead, 2)
        if not lead.contacted:
            if rng.random() < CLEANED_UP:
                gap = _wait(
                    rng, 3 * DAY / self.pace, 0.4, DAY / self.pace, CAP * 3 * DAY / self.pace
                )
                self._close_lost(tl, lead.created + gap, self.open[0], "no_response")
            return tl.events
        reached = self._reach(rng, tl)
        if reached is not None:
            self._pipeline(rng, tl, reached)
        return tl.events

    def _reach(self, rng: random.Random, tl: _Timeline) -> float | None:
        """Attempts until the first conversation (its time) or giving up (None)."""
        lead, rep, pace = tl.lead, tl.lead.rep, self.pace
        # Speed to lead: a lead called back within minutes still remembers filling the form.
        speed = 1.35 if lead.delay <= 300 else 1.1 if lead.delay <= HOUR else 0.75
        boost = speed * lead.source.reach * (1.4 if lead.existing else 1.0)
        ts = lead.created + lead.delay
        for attempt in range(rep.persistence):
            channel = _CHANNELS[bisect(rep.channel_cum, rng.random() * rep.channel_cum[-1])]
            base = rep.connect_skill if channel == "call" else _COLD_CONNECT[channel]
            connected = rng.random() < min(0.95, base * boost)
            self._attempt(rng, tl, ts, channel, connected, warm=False)
            if connected:
                return ts
            if attempt + 1 < rep.persistence:
                gap = REACH_GAPS[min(attempt, len(REACH_GAPS) - 1)]
                ts += _wait(rng, gap / pace, 0.5, 60.0, CAP * gap / pace)
        ts += _wait(rng, GIVE_UP / pace, 0.5, 60.0, CAP * GIVE_UP / pace)
        self._close_lost(tl, ts, self.open[0], "no_response")
        return None

    def _pipeline(self, rng: random.Random, tl: _Timeline, ts: float) -> None:
        """From the first conversation: stage by stage until won or lost."""
        lead, stages = tl.lead, self.open
        quality = lead.source.quality * lead.rep.close_skill * (2.5 if lead.existing else 1.0)
        odds = ADVANCE / (1 - ADVANCE) * quality
        advance = odds / (1 + odds)
        i, value = 0, None
        if len(stages) > 1:
            ts += rng.uniform(30.0, 900.0)  # the conversation, then the CRM update
            tl.add(ts, STAGE_CHANGED, {"from_stage": stages[0], "to_stage": stages[1]})
            i = 1
        while True:
            dwell = _wait(rng, DWELL / self.pace, 0.8, 60.0, CAP * DWELL / self.pace)
            self._touches(rng, tl, ts, dwell, i)
            ts += dwell
            if rng.random() >= advance:
                self._close_lost(tl, ts, stages[i], self._loss_reason(rng, i))
                return
            if i + 1 == len(stages):
                self._close_won(rng, tl, ts, stages[i], value)
                return
            i += 1
            value = self._enter(rng, tl, ts, stages[i - 1], stages[i], value, i)

    def _enter(
        self,
        rng: random.Random,
        tl: _Timeline,
        ts: float,
        before: str,
        stage: str,
        value: float | None,
        i: int,
    ) -> float | None:
        """Move forward; from the third stage on, reps start to put a value on the deal."""
        move: dict[str, Any] = {"from_stage": before, "to_stage": stage}
        if i >= 2 and rng.random() < (0.7 if value is None else 0.3):
            base = tl.lead.estimate if value is None else value
            value = round(_wait(rng, base, 0.2, 100.0, 5e6), -2)
            move["deal_value"] = value
        if rng.random() < 0.3:
            guess = self.default_p[stage] + 0.12 * _Z[rng.getrandbits(12)]
            move["win_probability"] = round(min(0.99, max(0.01, guess)), 2)
        tl.add(ts, STAGE_CHANGED, move)
        return value

    def _close_won(
        self, rng: random.Random, tl: _Timeline, ts: float, before: str, value: float | None
    ) -> None:
        move: dict[str, Any] = {"from_stage": before, "to_stage": self.won}
        if rng.random() < 0.85:  # else the last value given stands (or there is none)
            base = tl.lead.estimate if value is None else value
            move["deal_value"] = round(base * rng.uniform(0.85, 1.05), -1)
        if rng.random() < 0.1:
            move["win_probability"] = 1.0
        if not self.outcomes:
            tl.add(ts, STAGE_CHANGED, move)
            return
        lead = tl.lead
        outcomes = LeadOutcomes(lead.lead_id, lead.existing)
        move["products"] = outcomes.products()
        tl.add(ts, STAGE_CHANGED, move)
        for at, kind, fields in outcomes.after_win(ts, lead.rep.close_skill, self.pace):
            tl.add(at, kind, fields)

    def _close_lost(self, tl: _Timeline, ts: float, before: str, reason: str) -> None:
        move: dict[str, Any] = {"from_stage": before, "to_stage": self.lost, "lost_reason": reason}
        tl.add(ts, STAGE_CHANGED, move)

    def _loss_reason(self, rng: random.Random, i: int) -> str:
        cum = self.loss_cum[i]
        return LOST_REASONS[min(len(LOST_REASONS) - 1, bisect(cum, rng.random() * cum[-1]))]

    def _touches(self, rng: random.Random, tl: _Timeline, ts: float, dwell: float, i: int) -> None:
        """Follow-ups while the deal sits in a stage: calls, emails and, later on, meetings."""
        rep, count = tl.lead.rep, bisect((0.25, 0.6, 0.85), rng.random())
        for at in sorted(rng.random() for _ in range(count)):
            if i >= 2 and rng.random() < 0.3:
                channel = "meeting"
            else:
                channel = _CHANNELS[bisect(rep.channel_cum, rng.random() * rep.channel_cum[-1])]
            chance = 0.9 if channel == "meeting" else _WARM_CONNECT[channel]
            connected = rng.random() < min(0.95, chance * tl.lead.source.reach)
            self._attempt(rng, tl, ts + at * dwell, channel, connected, warm=True)

    def attempt_later(self, rng: random.Random, tl: _Timeline, ts: float) -> None:
        """One more follow-up (history pads a lead with these to reach its event count)."""
        rep = tl.lead.rep
        channel = _CHANNELS[bisect(rep.channel_cum, rng.random() * rep.channel_cum[-1])]
        connected = rng.random() < _WARM_CONNECT[channel] * tl.lead.source.reach
        self._attempt(rng, tl, ts, channel, connected, warm=True)

    def _attempt(
        self,
        rng: random.Random,
        tl: _Timeline,
        ts: float,
        channel: str,
        connected: bool,
        warm: bool,
    ) -> None:
        attempt: dict[str, Any] = {"channel": channel, "connected": connected}
        if channel != "email":
            tl.add(ts, CONTACT_ATTEMPTED, attempt)
            return
        message_id = f"{tl.lead.lead_id}.m{tl.n}"
        attempt["message_id"] = message_id
        tl.add(ts, CONTACT_ATTEMPTED, attempt)
        self._opens(rng, tl, ts, message_id, connected, warm)

    def _opens(
        self,
        rng: random.Random,
        tl: _Timeline,
        sent: float,
        message_id: str,
        replied: bool,
        warm: bool,
    ) -> None:
        """Opens (and clicks) of one email, always after the send; a reply implies an open."""
        chance = (WARM_OPEN if warm else COLD_OPEN) * tl.lead.source.reach
        if not replied and rng.random() >= chance:
            return
        opened: dict[str, Any] = {"message_id": message_id}
        if rng.random() < 0.5:  # some mail trackers know the sender, some do not
            opened["rep_id"], opened["team_id"] = tl.lead.rep.rep_id, tl.lead.rep.team_id
        first = sent + _wait(rng, OPEN_MEDIAN * self.react, 1.4, 4.0, OPEN_CAP * self.react)
        tl.add(first, EMAIL_OPENED, opened if rng.random() < 0.5 else {**opened, "clicked": False})
        if rng.random() < (WARM_CLICK if warm else COLD_CLICK):
            click = first + _wait(rng, CLICK_MEDIAN, 1.0, 2.0, CLICK_CAP)
            tl.add(click, EMAIL_OPENED, {**opened, "clicked": True})
        if rng.random() < REOPEN:
            tl.add(first + _wait(rng, REOPEN_MEDIAN, 1.2, 60.0, OPEN_CAP), EMAIL_OPENED, opened)


def _event(ts: float, n: int, kind: str, lead: _Lead, extra: dict[str, Any] | None) -> SimEvent:
    """The contract's JSON object of one raw event."""
    lead_id = lead.lead_id
    if kind in OUTCOME_KINDS:  # no lead or rep fields: the customer's, in extra
        return kind, {"event_id": f"{lead_id}.{n}", "occurred_at": rfc3339(ts), **(extra or {})}
    event: dict[str, Any] = {
        "event_id": f"{lead_id}.{n}",
        "occurred_at": rfc3339(ts),
        "lead_id": lead_id,
    }
    if kind != EMAIL_OPENED:  # the tracker of an open may not know the rep: in extra if so
        event["rep_id"] = lead.rep.rep_id
        event["team_id"] = lead.rep.team_id
    if extra:
        event.update(extra)
    return kind, event


class _Sample(NamedTuple):
    """What a sample of leads says about the model."""

    events_per_lead: float
    pipeline_seconds: float  # mean, from the first attempt to the last event
    ages: list[float]  # of every event since its lead-created, sorted

    def age_quantile(self, q: float) -> float:
        return self.ages[min(len(self.ages) - 1, int(q * len(self.ages)))]


def _calibrate(model: _Model, seed: int, samples: int = 2000) -> _Sample:
    """Measure the model on a sample of leads (its own random stream)."""
    rng = random.Random(seed ^ 0x5EED_CA11)
    ages: list[float] = []
    span = 0.0
    for idx in range(samples):
        lead = model.arrive(rng, idx, "calibration", 0.0)
        raws = model.first(rng, lead) + model.rest(rng, lead)
        ages.extend(r[0] for r in raws)
        span += max(r[0] for r in raws) - (lead.delay if lead.contacted else 0.0)
    ages.sort()
    return _Sample(len(ages) / samples, span / samples, ages)


class _Scrambler:
    """Delays each event by up to ``window`` seconds and re-sends a few: arrival order."""

    def __init__(self, seed: int, window: float, duplicates: float) -> None:
        self._rng = random.Random(seed ^ 0x5C4A_B1E)
        self._window, self._duplicates = window, duplicates
        self._buffer: list[tuple[float, int, str, dict[str, Any]]] = []
        self._seq = 0

    def put(self, ts: float, kind: str, event: dict[str, Any]) -> None:
        rng, window = self._rng, self._window
        heapq.heappush(self._buffer, (ts + rng.random() * window, self._seq, kind, event))
        if rng.random() < self._duplicates:  # the same event again: same event_id
            again = (ts + rng.random() * window, self._seq + 1, kind, dict(event))
            heapq.heappush(self._buffer, again)
        self._seq += 2

    def take(self, until: float) -> list[SimEvent]:
        out, buffer = [], self._buffer
        while buffer and buffer[0][0] < until:
            _, _, kind, event = heapq.heappop(buffer)
            out.append((kind, event))
        return out


def _tag(*parts: object) -> str:
    """A short run tag in every id: two runs of the same seed at other times do not collide."""
    return f"{zlib.crc32(repr(parts).encode()):08x}"


# A scheduled event: (time, lead index, lead-local number, kind, lead, extra fields).
_Entry: TypeAlias = tuple[float, int, int, str, _Lead, dict[str, Any] | None]


class SalesTeam:
    """A sales team working a stream of leads; ``events_between`` walks it forward in time.

    Everything is drawn from ``seed`` (and ``start``, which names the run in every id), and
    each lead's life from its own stream, so the same arguments give the same events however
    the time is cut into windows. Leads arrive as a Poisson process sized so that the team
    emits ``rate`` events per second on average (``events_per_lead`` is measured on a sample).
    The pipeline is pre-filled as if the team had worked before ``start``, so the rate holds
    from the first window. The pre-fill stops at ``warm_leads`` leads (~1.5 s of start-up),
    which is enough up to ~60 events/s; beyond, the first hour runs low and then catches up
    (measured: 96 % of the rate at 100 events/s, 82-92 % at 300, 60-86 % at 1000).

    Response times and email opens run in real time (the SLA is in seconds). Later pipeline
    waits (follow-ups, days in a stage) are divided by ``pace``; by default pace grows with the
    rate so that about ``IN_FLIGHT`` deals are open at once (1, realistic days, at low rates).

    With ``history`` (a ``History``), the past is kept instead of dropped: ``past_events()``
    returns every event before ``start`` of the pre-filled leads (``warm_seconds`` deep at
    ``rate``) and of a quieter, realistic team (pace 1, ``leads_per_day``) working
    ``days`` before that, lead-created included, so that a worker fed the past first and
    then the live events sees whole lives: every deal with its source, every open with its
    send, every stage entry before its exit.
    """

    def __init__(
        self,
        settings: Settings,
        reps: int = 8,
        seed: int = 0,
        start: float | None = None,
        *,
        rate: float = 10.0,
        pace: float | None = None,
        scramble: bool = False,
        scramble_window: float = 60.0,
        duplicate_ratio: float = 0.02,
        warm_leads: int = WARM_LEADS,
        history: History | None = None,
        response_scale: float = 1.0,
        outcomes: bool = False,
    ) -> None:
        if rate <= 0 or (pace is not None and pace <= 0):
            raise ValueError("rate and pace must be > 0")
        self.start = time.time() if start is None else float(start)
        self.seed, self.rate = seed, rate
        self.reps = _make_reps(random.Random(seed), reps, response_scale)
        self._model = _Model(settings, self.reps, react=response_scale, outcomes=outcomes)
        self._history = history
        self._past: list[_Entry] = []
        warmup = self._size(pace, warm_leads)
        self._tag = _tag(seed, self.start)
        self._arrivals = random.Random(seed + 1)
        self._lives = random.Random()  # reseeded per lead: a life does not depend on windows
        self._buckets: dict[int, list[_Entry]] = {}  # by whole second: a calendar queue
        self._bucket = int(self.start)  # the first bucket not drained to its end
        self._open: tuple[int, list[_Entry]] | None = None  # the bucket being drained
        self._cursor = self.start  # everything before it is gone
        self._scrambler = _Scrambler(seed, scramble_window, duplicate_ratio) if scramble else None
        self._next_idx = 0
        self._next_arrival = self.start - warmup + self._arrivals.expovariate(self.lead_rate)
        with collections_paused():  # pre-fill: only the parts of lives after start remain
            if history is not None:
                self._quiet_team(settings, history)
            self._arrive_until(self.start)

    def _size(self, pace: float | None, warm_leads: int) -> float:
        """Set the lead rate and the pace from a sample of leads; return the pre-fill seconds."""
        sample = _calibrate(self._model, self.seed)
        self.events_per_lead = sample.events_per_lead
        self.lead_rate = self.rate / sample.events_per_lead
        auto = max(1.0, self.lead_rate * sample.pipeline_seconds / IN_FLIGHT)
        self.pace = self._model.pace = auto if pace is None else pace
        ages = sample if self.pace == 1.0 else _calibrate(self._model, self.seed)
        warm = min(ages.age_quantile(WARM_QUANTILE), warm_leads / self.lead_rate)
        return warm if self._history is None else min(warm, self._history.warm_seconds)

    def _quiet_team(self, settings: Settings, history: History) -> None:
        """The realistic team before the pre-fill: whole lives, drawn at once."""
        model = _Model(
            settings,
            self.reps,
            pace=history.pace,
            react=self._model.react,
            outcomes=self._model.outcomes,
        )
        arrivals = random.Random(self.seed + 2)
        # Seasons by thinning: arrivals at the highest rate, each kept with the season's
        # share of it (without seasonality every one is kept, as before).
        peak = 1.0 + history.seasonality
        rate = history.leads_per_day / DAY * peak
        created = self.start - history.days * DAY
        for idx in range(10**6):  # bounded: a history is at most a few hundred thousand leads
            created += arrivals.expovariate(rate)
            if created >= self.start:
                break
            if history.seasonality and arrivals.random() * peak > season(
                created, history.seasonality
            ):
                continue
            lead = model.arrive(arrivals, -1 - idx, f"lead-{self._tag}-h{idx:06d}", created)
            self._lives.seed((self.seed << 40) + (1 << 39) + idx)
            self._schedule(lead, model.first(arrivals, lead) + model.rest(self._lives, lead))

    def past_events(self) -> list[SimEvent]:
        """With ``history``: every event before ``start``, in time order (once: then gone)."""
        past, self._past = sorted(self._past, key=itemgetter(0, 1, 2)), []
        return [_event(ts, n, kind, lead, x) for ts, _, n, kind, lead, x in past]

    def invoices(self) -> list[SimEvent]:
        """With outcomes: last month's and this month's costs, recorded at ``start``."""
        if not self._model.outcomes:
            return []
        per_day = {src.name: self.lead_rate * DAY * src.share for src in SOURCES}
        if self._history is not None:  # the quiet team brings the leads of most of a month
            per_day = {name: self._history.leads_per_day * src.share
                       for name, src in ((s.name, s) for s in SOURCES)}  # fmt: skip
        return monthly_invoices(self.start, per_day, self.seed)

    @classmethod
    def for_rate(
        cls,
        settings: Settings,
        events_per_second: float,
        reps: int = 8,
        seed: int = 0,
        **kwargs: Any,
    ) -> SalesTeam:
        """A team emitting ``events_per_second`` on average."""
        return cls(settings, reps, seed, rate=events_per_second, **kwargs)

    def events_between(self, t0: float, t1: float) -> list[SimEvent]:
        """The events with ``t0 <= occurred_at < t1`` (with ``scramble``: arriving then).

        Sorted by ``occurred_at`` unless scrambled. Windows are taken forward in time: each
        event is returned once, and what falls before ``start`` or an earlier ``t1`` is gone.
        """
        if t1 <= self._cursor:
            return []
        with collections_paused():
            self._arrive_until(t1)
            entries = self._drain(t1)
        self._cursor = t1
        if self._scrambler is None:
            return [_event(ts, n, kind, lead, x) for ts, _, n, kind, lead, x in entries if ts >= t0]
        for ts, _, n, kind, lead, x in entries:
            if ts >= t0:
                self._scrambler.put(ts, *_event(ts, n, kind, lead, x))
        return self._scrambler.take(t1)

    def _arrive_until(self, t1: float) -> None:
        model, ar = self._model, self._arrivals
        while self._next_arrival < t1:
            created, idx = self._next_arrival, self._next_idx
            self._next_arrival += ar.expovariate(self.lead_rate)
            self._next_idx += 1
            lead = model.arrive(ar, idx, f"lead-{self._tag}-{idx:07d}", created)
            first = model.first(ar, lead)
            due = created + (lead.delay if lead.contacted else 0.0)
            if due < self._cursor:  # pre-fill: the lead is already being worked
                self._schedule(lead, first + self._rest(lead))
            else:
                self._schedule(lead, first)
                self._put((due, idx, -1, _TRIGGER, lead, None))

    def _rest(self, lead: _Lead) -> list[_Raw]:
        self._lives.seed((self.seed << 40) + lead.idx)
        return self._model.rest(self._lives, lead)

    def _schedule(self, lead: _Lead, raws: list[_Raw]) -> None:
        cursor, idx = self._cursor, lead.idx
        keep = self._history is not None
        for ts, n, kind, extra in raws:
            if ts >= cursor:
                self._put((ts, idx, n, kind, lead, extra))
            elif keep:
                self._past.append((ts, idx, n, kind, lead, extra))

    def _put(self, entry: _Entry) -> None:
        key = int(entry[0])
        if self._open is not None and self._open[0] == key:
            heapq.heappush(self._open[1], entry)
        else:
            self._buckets.setdefault(key, []).append(entry)

    def _drain(self, t1: float) -> list[_Entry]:
        """Every entry before ``t1`` in time order, running the triggers met on the way."""
        out: list[_Entry] = []
        buckets, last = self._buckets, int(t1)
        for key in range(self._bucket, last + 1):
            entries = buckets.pop(key, None)
            if not entries:
                continue
            heapq.heapify(entries)
            self._open = (key, entries)
            while entries and entries[0][0] < t1:
                entry = heapq.heappop(entries)
                if entry[3] is _TRIGGER:
                    self._schedule(entry[4], self._rest(entry[4]))
                else:
                    out.append(entry)
            self._open = None
            if entries:
                buckets[key] = entries
        self._bucket = last
        return out


def history(
    settings: Settings,
    n_events: int,
    leads: int,
    span_seconds: float,
    *,
    reps: int = 8,
    seed: int = 0,
    end: float | None = None,
    scramble: bool = False,
    outcomes: bool = False,
) -> Iterator[SimEvent]:
    """Exactly ``n_events`` events of ``leads`` leads created over ``span_seconds`` up to ``end``.

    For backfills and benchmarks: no real-time pacing, ~180k events/s. Leads created near
    ``end`` (default now) are cut short by it. To hit the count exactly, leads get extra
    follow-ups (too few events) or random events other than lead-created are left out (too
    many). Sorted by ``occurred_at``; with ``scramble``, in a shuffled arrival order with ~2 %
    duplicates on top of the count. The dicts are built as the iterator is consumed.
    With ``outcomes``, the business events too (``tools.outcomes``: segments, products on
    won deals, NPS answers and churns after them, both in pipeline time like the rest of
    a life), and the month's and last month's invoices, recorded at ``end`` (in the count).
    """
    if n_events < 0 or leads < 1 or span_seconds <= 0:
        raise ValueError("need n_events >= 0, leads >= 1 and span_seconds > 0")
    end = time.time() if end is None else float(end)
    rng = random.Random(seed)
    model = _Model(settings, _make_reps(rng, reps), outcomes=outcomes)
    sample = _calibrate(model, seed, samples=300)
    model.pace = max(1.0, sample.pipeline_seconds / (span_seconds / 4))  # lives fit the span
    invoices = []
    if outcomes:
        per_day = {src.name: leads / span_seconds * DAY * src.share for src in SOURCES}
        invoices = monthly_invoices(end, per_day, seed)[:n_events]
    with collections_paused():
        raw, timelines = _history_raw(model, rng, leads, span_seconds, end, _tag(seed, end))
        raw = _exact_count(model, rng, raw, timelines, n_events - len(invoices), end)
    raw.sort(key=itemgetter(0))  # stable: same-time events keep their lead's order
    if not scramble:
        events = (_event(ts, n, kind, lead, x) for ts, n, kind, lead, x in raw)
        return itertools.chain(events, invoices)
    return _scrambled(raw, seed, [(end, kind, event) for kind, event in invoices])


_HistoryEntry: TypeAlias = tuple[float, int, str, _Lead, dict[str, Any] | None]


def _history_raw(
    model: _Model, rng: random.Random, leads: int, span: float, end: float, tag: str
) -> tuple[list[_HistoryEntry], list[_Timeline]]:
    created = sorted(end - span * rng.random() for _ in range(leads))
    raw: list[_HistoryEntry] = []
    timelines = []
    for idx, ts in enumerate(created):
        lead = model.arrive(rng, idx, f"lead-{tag}-{idx:07d}", ts)
        tl = _Timeline(lead, 0)
        tl.events = model.first(rng, lead) + model.rest(rng, lead)
        tl.n = len(tl.events)  # first() numbers 0-1, rest() from 2 on
        raw.extend((t, n, kind, lead, extra) for t, n, kind, extra in tl.events if t <= end)
        tl.events = []  # raw has them; padding only needs the lead and its next number
        timelines.append(tl)
    return raw, timelines


def _exact_count(
    model: _Model,
    rng: random.Random,
    raw: list[_HistoryEntry],
    timelines: list[_Timeline],
    n_events: int,
    end: float,
) -> list[_HistoryEntry]:
    """Pad with follow-ups or leave events out until there are exactly ``n_events``."""
    # Follow-ups go to leads already worked before the end, after their first attempt.
    worked = [tl for tl in timelines if tl.lead.contacted and _first_attempt(tl.lead) < end]
    while len(raw) < n_events:
        tl = rng.choice(worked or timelines)
        lead, before = tl.lead, len(tl.events)
        model.attempt_later(rng, tl, rng.uniform(min(_first_attempt(lead), end), end))
        raw.extend((t, n, kind, lead, x) for t, n, kind, x in tl.events[before:] if t <= end)
    surplus = len(raw) - n_events
    if surplus <= 0:
        return raw
    # Leave out random events, lead-created last: a lead should keep its first event.
    others = [i for i, r in enumerate(raw) if r[2] != LEAD_CREATED]
    if len(others) >= surplus:
        drop = set(rng.sample(others, surplus))
    else:
        created = [i for i, r in enumerate(raw) if r[2] == LEAD_CREATED]
        drop = set(others) | set(rng.sample(created, surplus - len(others)))
    return [r for i, r in enumerate(raw) if i not in drop]


def _first_attempt(lead: _Lead) -> float:
    return lead.created + lead.delay


def _scrambled(
    raw: list[_HistoryEntry], seed: int, more: list[tuple[float, str, dict[str, Any]]]
) -> Iterator[SimEvent]:
    scrambler = _Scrambler(seed, 60.0, 0.02)
    for ts, n, kind, lead, extra in raw:
        scrambler.put(ts, *_event(ts, n, kind, lead, extra))
    for ts, kind, event in more:
        scrambler.put(ts, kind, event)
    yield from scrambler.take(math.inf)
