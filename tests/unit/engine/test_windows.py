"""Windows: bucket edges, the time zone's midnight, and what a window holds at its boundaries."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.windows import WindowClock
from tests.support.facts import fact

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 3, 10, 12, 30, 15, tzinfo=UTC).timestamp()


def _count(part: PartitionAggregates, window: str, now: float) -> int:
    bounds = part.clock.bounds(window, now)
    return sum(acc.count for _, acc in part.window_accs("created", bounds))


def _part_with(*times: float, zone: ZoneInfo = UTC, now: float = NOW) -> PartitionAggregates:
    part = PartitionAggregates(WindowClock(zone), now)
    part.apply([fact("created", ("r1", "s"), t, 1.0) for t in times], 1)
    return part


def test_yesterday_is_in_7d_not_today() -> None:
    yesterday = NOW - 86400
    part = _part_with(yesterday)
    assert _count(part, "7d", NOW) == 1
    assert _count(part, "today", NOW) == 0
    assert _count(part, "1h", NOW) == 0


def test_1h_window_edges_are_whole_minutes() -> None:
    clock = WindowClock(UTC)
    bounds = clock.bounds("1h", NOW)
    assert bounds.end - bounds.start == 3600
    assert bounds.start == datetime(2026, 3, 10, 11, 31, tzinfo=UTC).timestamp()
    part = _part_with(bounds.start, bounds.start - 0.001, bounds.end - 0.001)
    assert _count(part, "1h", NOW) == 2  # the first instant is in, the one before is out


def test_7d_window_edges_are_whole_hours() -> None:
    bounds = WindowClock(UTC).bounds("7d", NOW)
    assert bounds.end - bounds.start == 7 * 86400
    part = _part_with(bounds.start, bounds.start - 1)
    assert _count(part, "7d", NOW) == 1


def test_today_starts_at_local_midnight() -> None:
    midnight = datetime(2026, 3, 10, tzinfo=UTC).timestamp()
    part = _part_with(midnight, midnight - 1)
    assert _count(part, "today", NOW) == 1


def test_time_zone_moves_midnight() -> None:
    # 12:30 UTC is 21:30 in Tokyo: an event at 16:00 UTC the day before is 01:00 Tokyo today
    tokyo = ZoneInfo("Asia/Tokyo")
    event = datetime(2026, 3, 9, 16, 0, tzinfo=UTC).timestamp()
    assert _count(_part_with(event), "today", NOW) == 0
    assert _count(_part_with(event, zone=tokyo), "today", NOW) == 1
    bounds = WindowClock(tokyo).bounds("today", NOW)
    assert bounds.start == datetime(2026, 3, 10, tzinfo=tokyo).timestamp()


def test_today_on_a_dst_day_is_23_hours() -> None:
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 3, 29, 15, 0, tzinfo=paris).timestamp()  # clocks went forward at 02:00
    bounds = WindowClock(paris).bounds("today", now)
    assert bounds.end - bounds.start == 23 * 3600


def test_window_slides_with_the_clock() -> None:
    part = _part_with(NOW - 30 * 60)
    assert _count(part, "1h", NOW) == 1
    later = NOW + 31 * 60
    assert _count(part, "1h", later) == 0
    assert _count(part, "today", later) == 1


def test_prune_drops_old_buckets_and_retraction_stays_symmetric() -> None:
    old = NOW - 7 * 86400 + 1800  # inside the 7d window now, outside it 3 hours later
    part = _part_with(old, NOW)
    assert _count(part, "7d", NOW) == 2
    later = NOW + 3 * 3600
    part.prune(later)
    assert _count(part, "7d", later) == 1
    part.apply([fact("created", ("r1", "s"), old, 1.0)], -1)  # past retention: ignored
    assert _count(part, "7d", later) == 1
    assert min(part.windowed["created"][("r1", "s")].h.counts) >= 0


@pytest.mark.parametrize("window", ["1h", "today", "7d", "bogus"])
def test_bounds_contain_now(window: str) -> None:
    clock = WindowClock(UTC)
    if window == "bogus":
        with pytest.raises(ValueError):
            clock.bounds(window, NOW)
        return
    b = clock.bounds(window, NOW)
    assert b.start <= NOW < b.end


# The extremes of an RFC 3339 date-time: year 1 and 9999 with any offset (up to 23:59) are
# instants of year 0 or 10000 in UTC or in the local zone, which datetime cannot hold.
EDGE_TIMES = [
    "0001-01-01T00:00:00+23:59",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59+23:59",
    "9999-12-31T23:59:59-23:59",
]


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"])
def test_every_rfc3339_instant_has_a_local_day_and_month(zone: str) -> None:
    # A cost's period_start of 0001-01-01T00:00:00+14:00 raised 'year 0 is out of range'
    # here, and its batch was read again every second for good.
    clock = WindowClock(ZoneInfo(zone))
    days = [clock.day(datetime.fromisoformat(text).timestamp()) for text in EDGE_TIMES]
    assert all(1 <= day <= date.max.toordinal() for day in days)
    for text, day in zip(EDGE_TIMES, days, strict=True):
        clock.month(datetime.fromisoformat(text).timestamp())
        clock.midnight(day)
