"""Business hours: the SLA clock runs only while the team is open (tested with a fixed clock)."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from streamproc.business_hours import BusinessHours, SlaClock

PARIS = ZoneInfo("Europe/Paris")
HOURS = BusinessHours(
    days="mon-fri",
    open=time(9),
    close=time(17),
    timezone="Europe/Paris",
    holidays=frozenset({date(2026, 12, 25)}),
)
CLOCK = SlaClock({"*": HOURS})


def _at(*args: int) -> float:
    return datetime(*args, tzinfo=PARIS).timestamp()


def _due(created: float, sla: float = 300) -> datetime:
    return datetime.fromtimestamp(CLOCK.due(created, sla, "sales-emea", 1.0), PARIS)


def test_saturday_night_is_due_monday_morning() -> None:
    assert _due(_at(2026, 11, 28, 22, 0)) == datetime(2026, 11, 30, 9, 5, tzinfo=PARIS)


def test_inside_hours_is_wall_clock() -> None:
    assert _due(_at(2026, 11, 25, 10, 0)) == datetime(2026, 11, 25, 10, 5, tzinfo=PARIS)


def test_sla_spanning_closing_time_continues_next_morning() -> None:
    assert _due(_at(2026, 11, 25, 16, 58)) == datetime(2026, 11, 26, 9, 3, tzinfo=PARIS)


def test_holiday_is_skipped() -> None:
    # Thursday 24 Dec 16:59 + 5 min: 1 min left on the 24th, the 25th is a holiday
    assert _due(_at(2026, 12, 24, 16, 59)) == datetime(2026, 12, 28, 9, 4, tzinfo=PARIS)


def test_daylight_saving_change_moves_nothing() -> None:
    # Clocks go back on Sunday 25 Oct 2026: Monday still opens at 09:00 local time
    assert _due(_at(2026, 10, 24, 20, 0)) == datetime(2026, 10, 26, 9, 5, tzinfo=PARIS)
    # ... and forward on Sunday 29 Mar 2026
    assert _due(_at(2026, 3, 28, 20, 0)) == datetime(2026, 3, 30, 9, 5, tzinfo=PARIS)


def test_twice_the_sla_counts_open_time_only() -> None:
    created = _at(2026, 11, 25, 16, 57)
    escalation = CLOCK.due(created, 300, "t", 2.0)
    assert datetime.fromtimestamp(escalation, PARIS) == datetime(2026, 11, 26, 9, 7, tzinfo=PARIS)


def test_teams_without_calendar_use_the_wall_clock() -> None:
    clock = SlaClock({"emea": HOURS})
    saturday = _at(2026, 11, 28, 22, 0)
    assert clock.due(saturday, 300, "us", 1.0) == saturday + 300
    assert clock.due(saturday, 300, "emea", 1.0) == _at(2026, 11, 30, 9, 5)


@pytest.mark.parametrize(
    "bad",
    [
        {"days": "xyz"},
        {"open": "18:00", "close": "09:00"},
        {"timezone": "Mars/Olympus"},
        {"days": []},
    ],
)
def test_bad_calendars_are_refused(bad: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises((ValidationError, ValueError)):
        BusinessHours(**bad)


@pytest.mark.parametrize("created", ["0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00+14:00"])
def test_a_lead_created_in_year_one_has_a_due_time(created: str) -> None:
    # An instant of year 0 in UTC: no date of its own; the clock starts at the first day
    # datetime holds, long past, rather than raising on every batch holding the lead.
    due = CLOCK.due(datetime.fromisoformat(created).timestamp(), 300, "sales-emea", 1.0)
    assert due < datetime(1, 1, 10, tzinfo=PARIS).timestamp()
