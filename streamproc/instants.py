"""The instants that have a date in every time zone: what event times are clamped to before
they become local days.

An RFC 3339 date-time of year 1 or 9999 with an offset (up to 23:59) is an instant of year
0 or 10000 in UTC or in a local zone, which ``datetime`` cannot hold: converting one raised
``ValueError: year 0 is out of range`` in the middle of a batch, which was then read again
forever. Such a time is far outside every window, so the day next to it serves as well.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["EARLIEST", "LATEST", "representable"]

# A day inside datetime's range on each side: more than any zone's offset (< 24 h).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC).timestamp()
LATEST = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def representable(t: float) -> float:
    """``t`` clamped to the instants whose local date exists in any zone."""
    return min(max(t, EARLIEST), LATEST)
