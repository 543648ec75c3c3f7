"""Business hours: the SLA clock runs only while a team is open (local time, holidays off)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamproc.instants import representable

__all__ = ["BusinessHours", "SlaClock", "check_zone"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DAYS_AHEAD = 800  # a calendar with no open day in two years is a configuration error


class BusinessHours(BaseModel):
    """One team's opening hours, e.g. ``{"days": "mon-fri", "open": "09:00", "close": "17:30",
    "timezone": "Europe/Paris", "holidays": ["2026-12-25"]}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: tuple[int, ...] = Field(default=(0, 1, 2, 3, 4), description="0 = Monday")
    open: time = time(9, 0)
    close: time = time(17, 0)
    timezone: str = "UTC"
    holidays: frozenset[date] = frozenset()

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: object) -> object:
        if isinstance(value, str):  # "mon-fri" or "mon,wed,fri"
            out: list[int] = []
            for part in value.lower().split(","):
                first, _, last = part.strip().partition("-")
                lo = _day(first)
                out.extend(range(lo, (_day(last) if last else lo) + 1))
            return tuple(out)
        if isinstance(value, list | tuple):
            return tuple(_day(v) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("days")
    @classmethod
    def _some_day(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 0 <= d <= 6 for d in value):
            raise ValueError("days: at least one of mon..sun")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)

    def model_post_init(self, _: object) -> None:
        if self.close <= self.open:
            raise ValueError("close must be after open")


def check_zone(value: str) -> str:
    """The IANA zone name, or a ValueError naming it."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


def _day(name: str) -> int:
    key = name.strip().lower()[:3]
    if key not in DAY_NAMES:
        raise ValueError(f"unknown day {name!r} (mon..sun)")
    return DAY_NAMES.index(key)


class SlaClock:
    """When a lead's SLA (or a share of it) has run, per team: wall clock or business hours."""

    def __init__(self, calendars: Mapping[str, BusinessHours]) -> None:
        self.calendars = dict(calendars)

    def calendar(self, team: str) -> BusinessHours | None:
        return self.calendars.get(team) or self.calendars.get("*")

    def due(self, created_ts: float, sla: float, team: str, fraction: float) -> float:
        """The instant ``fraction x sla`` seconds of open time have passed since ``created_ts``."""
        seconds = sla * fraction
        calendar = self.calendar(team)
        if calendar is None:
            return created_ts + seconds
        return _advance(calendar, created_ts, seconds)


def _advance(calendar: BusinessHours, start: float, seconds: float) -> float:
    zone = ZoneInfo(calendar.timezone)
    t = start
    day = datetime.fromtimestamp(representable(start), zone).date()  # year 0 has no date
    for _ in range(MAX_DAYS_AHEAD):
        if day.weekday() in calendar.days and day not in calendar.holidays:
            # Local wall-clock times: a DST change moves neither opening nor closing.
            opens = datetime.combine(day, calendar.open, tzinfo=zone).timestamp()
            closes = datetime.combine(day, calendar.close, tzinfo=zone).timestamp()
            if closes > t:
                begin = max(t, opens)
                if begin + seconds <= closes:
                    return begin + seconds
                seconds -= closes - begin
                t = closes
        day += timedelta(days=1)
    raise ValueError("business hours: no open time within two years")
