"""Per-lead state: the applied events of one lead, kept in a form that is order-independent.

The state is a *set* of events (deduplicated by ``event_id``); everything else is derived
from it by sorting on ``(occurred_at, event_id)``. So the same events in any order, or
replayed after a crash, give the same state and the same facts.

Between batches a lead is kept *packed*: as its changelog bytes alone, compressed
(``streamproc.runtime.packing``): ~200 bytes for a lead of ten events, against ~880 for the JSON and
~2,900 for the decoded items (event and message ids as strings, a named tuple and a float
per event). Reading the items unpacks the lead until the owner packs it again (``pack``).

A lead recovered from its changelog (``undecoded``) is kept as those bytes, decoded at its
first read, when they are compressed too: a restart decoded every lead first (100,000 of
them: ~0.95 s of its ~2.7 s recovery, in-process on a quiet machine), most of them never
read until the first eviction scan (a minute later, a slice at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import orjson

from streamproc.runtime.heap import json_to_keep
from streamproc.runtime.packing import Packer

__all__ = ["Attempt", "Created", "LeadState", "Open", "StageMove"]


class Created(NamedTuple):
    ts: float
    event_id: str
    rep: str
    source: str
    team: str
    existing: bool
    estimated_value: float | None
    # Added by the business events (spec/business-events.md); changelogs written before
    # them decode with these defaults.
    customer: str | None = None  # customer_id; None: the lead is its own customer
    segment: str = "default"


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
    products: tuple[str, ...] | None = None  # on a won move: the product ids, sorted, unique


class Open(NamedTuple):
    ts: float
    event_id: str
    message_id: str
    clicked: bool


_Row = TypeVar("_Row", Created, Attempt, StageMove, Open)


class _Items:
    """The decoded events of a lead, grouped by kind."""

    __slots__ = ("attempts", "created", "opens", "stages")

    def __init__(
        self,
        created: list[Created],
        attempts: list[Attempt],
        stages: list[StageMove],
        opens: list[Open],
    ) -> None:
        self.created = created
        self.attempts = attempts
        self.stages = stages
        self.opens = opens

    def groups(self) -> tuple[list[Any], ...]:
        return (self.created, self.attempts, self.stages, self.opens)


_NO_ALERTS: frozenset[str] = frozenset()
_LAST_TS = b'{"t":'  # how the changelog bytes of a lead start (``dumps``)
# One per process: its dictionary is learnt from the first leads packed, whatever engine.
PACKER = Packer()


class LeadState:
    """Every applied event of one lead; ``ids`` is derived, not stored.

    The event lists are for reading: change a lead through ``add``, ``append`` and
    ``remember_alert``, which keep its changelog bytes in step.
    """

    __slots__ = (
        "_alerts",
        "_first_seen",
        "_items",
        "_json",
        "_kept",
        "_last_ts",
        "_undecoded",
        "lead_id",
        "partition",
    )

    def __init__(self, lead_id: str, partition: int, first_seen: float = 0.0) -> None:
        self.lead_id = lead_id
        self.partition = partition
        self._first_seen = first_seen  # wall clock when this worker group first saw the lead
        self._last_ts = 0.0  # event time of the latest event applied (for eviction)
        self._alerts = _NO_ALERTS  # alert ids already published
        self._items: _Items | None = _Items([], [], [], [])
        # The changelog bytes, and their packed form, each while current; a packed lead
        # has only the second.
        self._json: bytes | None = None
        self._kept: bytes | None = None
        # Recovered and not read yet: ``_kept`` holds its changelog bytes as they came, the
        # three fields above are not decoded from them yet (``undecoded``).
        self._undecoded = False

    @property
    def first_seen(self) -> float:
        if self._undecoded:
            self._decode()
        return self._first_seen

    @property
    def last_ts(self) -> float:
        if self._undecoded:
            self._decode()
        return self._last_ts

    # --- packed and unpacked ---------------------------------------------------------------

    @property
    def packed(self) -> bool:
        return self._items is None

    def pack(self) -> None:
        """Keep only the changelog bytes, compressed (encoded now unless they are current)."""
        if self._items is not None:
            if self._kept is None:
                self._kept = PACKER.pack(self.dumps())
            self._items = None
            self._json = None

    @contextmanager
    def reading(self) -> Iterator[LeadState]:
        """Read a lead and leave it packed if it was: for a look outside the batches."""
        was_packed = self._items is None
        try:
            yield self
        finally:
            if was_packed:
                self.pack()

    def _unpacked(self) -> _Items:
        items = self._items
        if items is None:
            data = self._decode() if self._undecoded else orjson.loads(self.dumps())
            items = self._items = _decode_items(data)
        return items

    def _decode(self) -> dict[str, Any]:
        """An undecoded lead's fields, from its changelog bytes (then compressed); returns
        the decoded JSON."""
        raw = self._kept
        assert raw is not None  # an undecoded lead keeps its bytes
        data: dict[str, Any] = orjson.loads(raw)
        self._undecoded = False
        self._take_fields(raw, data)
        return data

    def _take_fields(self, raw: bytes, data: dict[str, Any]) -> None:
        """The fields kept beside the packed bytes, from the changelog's JSON ``data``."""
        self._first_seen = data.get("f", 0.0)
        self._last_ts = max((row[0] for k in "caso" for row in data[k]), default=0.0)
        if data.get("x"):
            self._alerts = frozenset(data["x"])
        self._kept = PACKER.pack(raw)

    def _changed(self) -> _Items:
        items = self._unpacked()
        self._json = self._kept = None
        return items

    # --- applying events -----------------------------------------------------------------

    @property
    def created(self) -> list[Created]:
        return self._unpacked().created

    @property
    def attempts(self) -> list[Attempt]:
        return self._unpacked().attempts

    @property
    def stages(self) -> list[StageMove]:
        return self._unpacked().stages

    @property
    def opens(self) -> list[Open]:
        return self._unpacked().opens

    @property
    def alerts(self) -> frozenset[str]:
        if self._undecoded:
            self._decode()
        return self._alerts

    def remember_alert(self, alert_id: str) -> None:
        if alert_id not in self.alerts:
            self._changed()
            self._alerts = self._alerts | {alert_id}

    @property
    def ids(self) -> set[str]:
        return {item.event_id for group in self._unpacked().groups() for item in group}

    def has(self, event_id: str) -> bool:
        # A scan, not a set of ids: a lead has a few dozen events at most, and a set per
        # lead would hold a second entry for each of them in memory.
        for group in self._unpacked().groups():
            for item in group:
                if item.event_id == event_id:
                    return True
        return False

    def add(self, item: Created | Attempt | StageMove | Open) -> bool:
        """Apply one event; False (and nothing changes) when its id was applied before."""
        if self.has(item.event_id):
            return False
        self.append(item)
        return True

    def append(self, item: Created | Attempt | StageMove | Open) -> None:
        """Apply one event known to be new (``has`` said so)."""
        items = self._changed()
        if isinstance(item, Attempt):
            items.attempts.append(item)
        elif isinstance(item, StageMove):
            items.stages.append(item)
        elif isinstance(item, Open):
            items.opens.append(item)
        else:
            items.created.append(item)
        if item.ts > self._last_ts:  # decoded: ``_changed`` read the items
            self._last_ts = item.ts

    # --- derived views (order-independent) -----------------------------------------------

    @property
    def creation(self) -> Created | None:
        """The earliest lead-created (a second one for the same lead does not re-create it)."""
        created = self.created
        return min(created) if created else None

    def first_attempt(self) -> Attempt | None:
        attempts = self.attempts
        return min(attempts) if attempts else None

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

    # --- changelog encoding ----------------------------------------------------------------

    def dumps(self) -> bytes:
        if self._json is not None:
            return self._json
        if self._items is None:
            assert self._kept is not None  # a packed lead keeps its bytes
            return PACKER.unpack(self._kept)  # not kept: a packed lead stays small
        items = self._items
        self._json = json_to_keep(
            {
                # First, and read alone by ``last_ts_of`` (the eviction scan of leads kept
                # on disk only, ``state.lead_cache``).
                "t": self._last_ts,
                "l": self.lead_id,
                "p": self.partition,
                "c": items.created,
                "a": items.attempts,
                "s": items.stages,
                "o": items.opens,
                "f": self._first_seen,  # decoded: the items are there
                "x": sorted(self._alerts),
            },
            # orjson takes plain tuples, not NamedTuple subclasses: each made one as it is
            # met (the bench history's leads dumped in 3.82 - 3.97 us against 4.25 - 4.78
            # with lists of tuples made first)
            default=_plain_tuple,
        )
        return self._json

    @staticmethod
    def last_ts_of(raw: bytes) -> float:
        """The event time of the latest event of the lead of changelog bytes ``raw``: read
        from its first field, without decoding the rest (~0.3 us against ~4 us to decode a
        lead of ten events); decoded whole when written before that field was."""
        if raw.startswith(_LAST_TS):
            return float(raw[len(_LAST_TS) : raw.index(b",", len(_LAST_TS))])
        data = orjson.loads(raw)
        return max((row[0] for k in "caso" for row in data[k]), default=0.0)

    @classmethod
    def loads(cls, raw: bytes | Any) -> LeadState:
        """The lead of changelog bytes, packed."""
        raw = bytes(raw)
        data = orjson.loads(raw)
        state = cls(data["l"], data["p"])
        state._take_fields(raw, data)
        state._items = None
        return state

    @classmethod
    def undecoded(cls, lead_id: str, partition: int, raw: bytes | Any) -> LeadState:
        """The lead of changelog bytes known to be ``lead_id``'s in ``partition``, packed
        and decoded at its first read (see the module): nothing is parsed now."""
        # Not through __init__: its empty items for 100,000 leads were ~10 % of a recovery.
        state = cls.__new__(cls)
        state.lead_id, state.partition = lead_id, partition
        state._first_seen = state._last_ts = 0.0
        state._alerts = _NO_ALERTS
        state._items = state._json = None
        state._kept = bytes(raw)  # plain JSON: ``Packer.unpack`` gives it back as it is
        state._undecoded = True
        return state


_new_tuple = tuple.__new__


def _plain_tuple(item: object) -> tuple[Any, ...]:
    """An event item (a NamedTuple) as the plain tuple orjson encodes; anything else is
    still an error, not silently an array."""
    if isinstance(item, tuple):
        return tuple(item)
    raise TypeError(f"{type(item).__name__} is not an event item")


def _rows(kind: type[_Row], rows: list[list[Any]]) -> list[_Row]:
    """The rows of one kind, as its named tuples: made by ``tuple.__new__`` from each row
    as it is (~3x faster than ``kind(*row)``, whose argument parsing was ~5 % of the
    engine's time in-process); a row of an older changelog, shorter, gets the defaults of
    the fields added since."""
    width = len(kind._fields)
    return [_new_tuple(kind, row) if len(row) == width else kind(*row) for row in rows]


def _stage_moves(rows: list[list[Any]]) -> list[StageMove]:
    """``_rows`` of the moves, a won move's products a tuple again (JSON made it a list)."""
    moves = _rows(StageMove, rows)
    return [m if m.products is None else m._replace(products=tuple(m.products)) for m in moves]


def _decode_items(data: dict[str, Any]) -> _Items:
    return _Items(
        _rows(Created, data["c"]),
        _rows(Attempt, data["a"]),
        _stage_moves(data["s"]),
        _rows(Open, data["o"]),
    )
