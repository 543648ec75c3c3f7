"""Event-time windows: which buckets a fact lands in, and which buckets make up a window.

Four bucket levels serve the windows of the contract: minutes (``1h``: the 60 minutes up
to and including the current one), hours (``7d``: the 168 hours up to and including the
current one), local days (``today``, in the configured time zone) and local months (the
calendar periods ``month``, ``quarter``, ``year`` and their ``last_*``: every one of them
is a run of whole local months, the fiscal year starting in
``STREAMPROC_FISCAL_YEAR_START_MONTH``; a current one holds its days up to today's end).
A month bucket key is ``year * 12 + month - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from streamproc.instants import representable

__all__ = [
    "PERIODS",
    "RETENTION_SECONDS",
    "WINDOWS",
    "WINDOW_MEANINGS",
    "WindowBounds",
    "WindowClock",
]

PERIODS = ("month", "quarter", "year", "last_month", "last_quarter", "last_year")
WINDOWS = ("1h", "today", "7d", *PERIODS)
WINDOW_MEANINGS = {
    "1h": "the 60 minutes up to and including the current one (minute buckets)",
    "today": "since local midnight in `STREAMPROC_TIMEZONE` (default UTC)",
    "7d": "the 168 hours up to and including the current one (hour buckets)",
    "month": "since local midnight of the 1st of the current month (up to today's end)",
    "quarter": "since the start of the current fiscal quarter "
    "(`STREAMPROC_FISCAL_YEAR_START_MONTH`; up to today's end)",
    "year": "since the start of the current fiscal year (up to today's end)",
    "last_month": "the previous month, whole",
    "last_quarter": "the previous fiscal quarter, whole",
    "last_year": "the previous fiscal year, whole",
}
# first month of the period (months back from the current one's start), months in it
_PERIOD_SPANS = {"month": 1, "quarter": 3, "year": 12}
RETENTION_SECONDS = 7 * 86400  # the 7-day windows: a lead is forgotten once this far past
# (events older than the start of ``last_year`` are "late": ``period_watermark``)
MINUTE = 60
HOUR = 3600
KEEP_MINUTES = 120  # minute buckets kept (the 1h window needs 60)
KEEP_HOURS = 169  # hour buckets kept (the 7d window needs 168)


@dataclass(frozen=True, slots=True)
class WindowBounds:
    """The window that holds ``now``: ``[start, end)`` in epoch seconds, and its buckets."""

    name: str
    start: float
    end: float
    level: str  # "m", "h", "d" or "M" (months)
    first_key: int
    last_key: int
    # A current period's local days after today (first, last), None when none: what landed
    # on them (a cost's shares of days to come) is not in the window yet. The periods run
    # "since" their start: up to now, at a day's resolution (today's share included).
    later_days: tuple[int, int] | None = None


class WindowClock:
    """Maps event times to bucket keys and "now" to window bounds, in one time zone."""

    def __init__(self, zone: ZoneInfo, fiscal_start_month: int = 1) -> None:
        self.zone = zone
        self.fiscal_offset = fiscal_start_month - 1  # months from January
        self._day_cache: dict[int, int] = {}
        self._month_of_slot: dict[int, int] = {}

    # --- bucket keys ---------------------------------------------------------------------

    @staticmethod
    def minute(t: float) -> int:
        return int(t // MINUTE)

    @staticmethod
    def hour(t: float) -> int:
        return int(t // HOUR)

    def day(self, t: float) -> int:
        """Local date ordinal. Every zone offset is a multiple of 15 minutes: cache by that."""
        slot = int(t // 900)
        cached = self._day_cache.get(slot)
        if cached is None:
            if len(self._day_cache) > 4096:
                self._day_cache.clear()
            local = datetime.fromtimestamp(representable(slot * 900), self.zone)
            cached = local.toordinal()
            self._day_cache[slot] = cached
        return cached

    def month(self, t: float) -> int:
        """The local month's key (``year * 12 + month - 1``) of event time ``t``, cached by
        15 minutes as ``day`` (one lookup: every fact of the periods asks)."""
        slot = int(t // 900)
        key = self._month_of_slot.get(slot)
        if key is None:
            if len(self._month_of_slot) > 4096:
                self._month_of_slot.clear()
            local = date.fromordinal(self.day(t))
            key = self._month_of_slot[slot] = local.year * 12 + local.month - 1
        return key

    def month_start(self, key: int) -> float:
        """Epoch seconds of local midnight on the 1st of month ``key``."""
        first = date(key // 12, key % 12 + 1, 1)
        return self.midnight(first.toordinal())

    def period_start(self, span: int, key: int) -> int:
        """The first month of the period of ``span`` months (1, 3 or 12) holding ``key``:
        quarters and years count from the fiscal year's first month."""
        if span == 1:
            return key
        return key - (key - self.fiscal_offset) % span

    def midnight(self, ordinal: int) -> float:
        """Epoch seconds of local midnight starting that day (DST-safe)."""
        local = datetime.combine(date.fromordinal(ordinal), time(0), tzinfo=self.zone)
        return local.timestamp()

    # --- windows -------------------------------------------------------------------------

    def bounds(self, name: str, now: float) -> WindowBounds:
        if name == "1h":
            m = self.minute(now)
            return WindowBounds(name, (m - 59) * MINUTE, (m + 1) * MINUTE, "m", m - 59, m)
        if name == "7d":
            h = self.hour(now)
            return WindowBounds(name, (h - 167) * HOUR, (h + 1) * HOUR, "h", h - 167, h)
        if name == "today":
            d = self.day(now)
            return WindowBounds(name, self.midnight(d), self.midnight(d + 1), "d", d, d)
        if name in PERIODS:
            return self._period(name, now)
        raise ValueError(f"unknown window {name!r}")

    def _period(self, name: str, now: float) -> WindowBounds:
        last = name.startswith("last_")
        span = _PERIOD_SPANS[name.removeprefix("last_")]
        first = self.period_start(span, self.month(now)) - (span if last else 0)
        end = first + span
        start, stop = self.month_start(first), self.month_start(end)
        later = None
        if not last:
            tomorrow, last_day = self.day(now) + 1, self.day(stop - 1)
            later = (tomorrow, last_day) if tomorrow <= last_day else None
        return WindowBounds(name, start, stop, "M", first, end - 1, later)

    def all_bounds(self, now: float) -> tuple[WindowBounds, ...]:
        return tuple(self.bounds(name, now) for name in WINDOWS)

    def period_watermark(self, now: float) -> float:
        """The oldest event time the periods keep: the start of ``last_year``."""
        return self.month_start(self.period_start(12, self.month(now)) - 12)

    def watermarks(self, now: float) -> tuple[float, float, float]:
        """Oldest event time each level still keeps (minute, hour, day), on bucket edges."""
        m = (self.minute(now) - KEEP_MINUTES) * MINUTE
        h = (self.hour(now) - KEEP_HOURS) * HOUR
        today = date.fromordinal(self.day(now))
        d = self.midnight((today - timedelta(days=8)).toordinal())
        return float(m), float(h), d
