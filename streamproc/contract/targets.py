"""Targets (quotas) on the compacted topic ``sales.targets`` (spec/periods-and-targets.md).

Key ``<measure>:<period>:<rep>`` (``*``: the team); value JSON ``{"measure", "period",
"rep", "value"}`` with ``rep`` null for the team; a null value, or a tombstone, removes the
target. A message that breaks this is refused with its reason (dead-lettered by the worker,
one line from ``streamproc targets``), never applied.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from streamproc.exceptions import InvalidEvent

__all__ = [
    "MEASURES",
    "TARGET_PERIODS",
    "TEAM",
    "TargetKey",
    "encode_target",
    "parse_target",
    "target_key",
]

MEASURES = ("contact_attempts", "leads_created", "new_customers", "deals_won", "revenue_won")
# target period -> the window its actual is read from
TARGET_PERIODS = {"day": "today", "month": "month", "quarter": "quarter", "year": "year"}
TEAM = "*"

TargetKey = tuple[str, str, str]
"""(measure, period, rep); rep ``""`` for the team."""


def target_key(measure: str, period: str, rep: str | None) -> bytes:
    return f"{measure}:{period}:{rep or TEAM}".encode()


def encode_target(measure: str, period: str, rep: str | None, value: float | None) -> bytes:
    """The message's value; ``InvalidEvent`` for a value no worker would apply: orjson
    writes NaN and infinity as null, which would remove the target instead."""
    amount = None if value is None else _amount(value)
    return orjson.dumps({"measure": measure, "period": period, "rep": rep, "value": amount})


def _amount(amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise InvalidEvent(f"value must be a number or null, got {amount!r}")
    if not math.isfinite(amount) or amount <= 0:
        raise InvalidEvent(f"a target must be a positive number, got {amount!r}")
    return float(amount)


def _check(measure: object, period: object, rep: object) -> TargetKey:
    if measure not in MEASURES:
        raise InvalidEvent(f"unknown measure {measure!r}: one of {', '.join(MEASURES)}")
    if period not in TARGET_PERIODS:
        raise InvalidEvent(f"unknown period {period!r}: one of {', '.join(TARGET_PERIODS)}")
    # Any rep id of events.md (1-128 chars, ':' included) can have a target: the key splits
    # at its first two colons only, as measures and periods have none.
    if rep is not None and (not isinstance(rep, str) or not rep or rep == TEAM):
        raise InvalidEvent(f"rep must be a rep id (not empty, not '*') or null, got {rep!r}")
    return (str(measure), str(period), rep or "")


def parse_target(key: bytes | None, value: bytes | None) -> tuple[TargetKey, float | None]:
    """The target a message sets (its value) or removes (None); ``InvalidEvent`` says why
    a message is refused."""
    try:
        measure, period, rep = (key or b"").decode().split(":", 2)
    except (UnicodeDecodeError, ValueError):
        raise InvalidEvent(f"key {key!r} is not <measure>:<period>:<rep or *>") from None
    parsed = _check(measure, period, None if rep == TEAM else rep)
    if not value:
        return parsed, None  # a tombstone
    try:
        body: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"value is not JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"measure", "period", "rep", "value"}:
        raise InvalidEvent('value must be {"measure", "period", "rep", "value"}')
    if _check(body["measure"], body["period"], body["rep"]) != parsed:
        raise InvalidEvent(f"the value names another target than its key {key!r}")
    amount = body["value"]
    return parsed, None if amount is None else _amount(amount)
