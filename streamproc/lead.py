"""Per-lead state: the applied events of one lead, kept in a form that is order-independent.

The state is a *set* of events (deduplicated by ``event_id``); everything else is derived
from it by sorting on ``(occurred_at, event_id)``. So the same events in any order, or
replayed after a crash, give the same state and the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

__all__ = ["Attempt", "Created", "LeadState", "Open", "StageMove"]


class Created(NamedTuple):
    ts: float
    event_id: str
    rep: str
    source: str
    team: str
    existing: bool
    estimated_value: float | None


class Attempt(NamedTuple):
    ts: float
    event_id: str
    rep: str
    channel: str
    connected: bool
    message_id: str | None


class StageMove(NamedTuple):
    ts: float
    event_id: str
    rep: str
    to_stage: str
    deal_value: float | None
    probability: float | None
    lost_reason: str | None


class Open(NamedTuple):
    ts: float
    event_id: str
    message_id: str
    clicked: bool


@dataclass(slots=True)
class LeadState:
    """Every applied event of one lead, grouped by kind; ``ids`` is derived, not stored."""

    lead_id: str
    partition: int
    created: list[Created] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    stages: list[StageMove] = field(default_factory=list)
    opens: list[Open] = field(default_factory=list)
    first_seen: float = 0.0  # wall clock when this worker group first saw the lead
    alerts: set[str] = field(default_factory=set)  # alert ids already published

    # --- applying events -----------------------------------------------------------------

    @property
    def ids(self) -> set[str]:
        return {item.event_id for group in self._groups() for item in group}

    def has(self, event_id: str) -> bool:
        # A scan, not a set of ids: a lead has a few dozen events at most, and a set per
        # lead would hold a second entry for each of them in memory.
        for group in self._groups():
            for item in group:
                if item.event_id == event_id:
                    return True
        return False

    def _groups(self) -> tuple[list[Any], ...]:
        return (self.created, self.attempts, self.stages, self.opens)

    def add(self, item: Created | Attempt | StageMove | Open) -> bool:
        """Apply one event; False (and nothing changes) when its id was applied before."""
        if self.has(item.event_id):
            return False
        self.append(item)
        return True

    def append(self, item: Created | Attempt | StageMove | Open) -> None:
        """Apply one event known to be new (``has`` said so)."""
        if isinstance(item, Attempt):
            self.attempts.append(item)
        elif isinstance(item, StageMove):
            self.stages.append(item)
        elif isinstance(item, Open):
            self.opens.append(item)
        else:
            self.created.append(item)

    # --- derived views (order-independent) -----------------------------------------------

    @property
    def creation(self) -> Created | None:
        """The earliest lead-created (a second one for the same lead does not re-create it)."""
        return min(self.created) if self.created else None

    def first_attempt(self) -> Attempt | None:
        return min(self.attempts) if self.attempts else None

    def stage_history(self) -> list[StageMove]:
        return sorted(self.stages)

    @property
    def owner(self) -> str:
        """The rep who owns the lead: the creator, else the first rep seen on it."""
        creation = self.creation
        if creation is not None:
            return creation.rep
        acted = [(a.ts, a.event_id, a.rep) for a in self.attempts]
        acted += [(s.ts, s.event_id, s.rep) for s in self.stages]
        return min(acted)[2] if acted else "unknown"

    @property
    def source(self) -> str:
        creation = self.creation
        return creation.source if creation is not None else "unknown"

    @property
    def last_ts(self) -> float:
        """Event time of the latest event applied (for eviction)."""
        times = [c.ts for c in self.created] + [a.ts for a in self.attempts]
        times += [s.ts for s in self.stages] + [o.ts for o in self.opens]
        return max(times) if times else 0.0

    # --- changelog encoding ----------------------------------------------------------------

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "l": self.lead_id,
                "p": self.partition,
                # orjson takes plain tuples, not NamedTuple subclasses
                "c": [tuple(x) for x in self.created],
                "a": [tuple(x) for x in self.attempts],
                "s": [tuple(x) for x in self.stages],
                "o": [tuple(x) for x in self.opens],
                "f": self.first_seen,
                "x": sorted(self.alerts),
            }
        )

    @classmethod
    def loads(cls, raw: bytes | Any) -> LeadState:
        data = orjson.loads(raw)
        state = cls(
            lead_id=data["l"],
            partition=data["p"],
            created=[Created(*row) for row in data["c"]],
            attempts=[Attempt(*row) for row in data["a"]],
            stages=[StageMove(*row) for row in data["s"]],
            opens=[Open(*row) for row in data["o"]],
            first_seen=data.get("f", 0.0),
            alerts=set(data.get("x", ())),
        )
        return state
