"""Event-time windows: which buckets a fact lands in, and which buckets make up a window.

Three bucket levels serve the three windows of the contract: minutes (``1h``: the 60
minutes up to and including the current one), hours (``7d``: the 168 hours up to and
including the current one) and local days (``today``, in the configured time zone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["RETENTION_SECONDS", "WINDOWS", "WINDOW_MEANINGS", "WindowBounds", "WindowClock"]

WINDOWS = ("1h", "today", "7d")
WINDOW_MEANINGS = {
    "1h": "the 60 minutes up to and including the current one (minute buckets)",
    "today": "since local midnight in `STREAMPROC_TIMEZONE` (default UTC)",
    "7d": "the 168 hours up to and including the current one (hour buckets)",
}
RETENTION_SECONDS = 7 * 86400  # the longest window: older events are "late"
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
    level: str  # "m", "h" or "d"
    first_key: int
    last_key: int


class WindowClock:
    """Maps event times to bucket keys and "now" to window bounds, in one time zone."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._day_cache: dict[int, int] = {}

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
            cached = datetime.fromtimestamp(slot * 900, self.zone).toordinal()
            self._day_cache[slot] = cached
        return cached

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
        raise ValueError(f"unknown window {name!r}")

    def all_bounds(self, now: float) -> tuple[WindowBounds, ...]:
        return tuple(self.bounds(name, now) for name in WINDOWS)

    def watermarks(self, now: float) -> tuple[float, float, float]:
        """Oldest event time each level still keeps (minute, hour, day), on bucket edges."""
        m = (self.minute(now) - KEEP_MINUTES) * MINUTE
        h = (self.hour(now) - KEEP_HOURS) * HOUR
        today = date.fromordinal(self.day(now))
        d = self.midnight((today - timedelta(days=8)).toordinal())
        return float(m), float(h), d
