"""The truth a distributed run must reach: one in-process engine over all events, once each."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from streamproc.config import Settings
from streamproc.contract.events import BusinessKind, EventKind
from streamproc.contract.targets import TargetKey
from streamproc.engine.engine import CUSTOMERS, BatchResult, Engine, RawMessage
from streamproc.kpis.compute import (
    ReadContext,
    Sample,
    Summary,
    daily_attempt_targets,
    split_samples,
    summaries,
    targets_in_force,
    whole_samples,
)

SeriesKey = tuple[str, frozenset[tuple[str, str]]]
NOW_DEPENDENT = {"sales_oldest_awaiting_contact_seconds"}
LEAD_KINDS = frozenset(k.value for k in EventKind)


class Truth:
    """Feeds events (any order, any repeats) to a single engine; reads the KPIs at any time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Engine(settings, {})
        self._offset = 0

    def feed(self, events: Iterable[tuple[str, dict[str, Any]]], now: float) -> None:
        batch = []
        for kind, event in events:
            self._offset += 1
            batch.append(
                RawMessage(
                    kind_of(kind),
                    self.settings.topic(kind),
                    0,
                    self._offset,
                    key_of(kind, event),
                    orjson.dumps(event),
                    None,
                )
            )
        process_all(self.engine, batch, now)

    def kpis(self, now: float) -> dict[SeriesKey, float]:
        samples = engine_samples(self.engine, now)
        out: dict[SeriesKey, float] = {}
        for s in samples:
            labels = dict(s.labels)
            if s.window is not None:
                labels["window"] = s.window.name
            out[(s.metric, frozenset(labels.items()))] = s.value
        return out


def key_of(kind: str, event: dict[str, Any]) -> bytes:
    """The Kafka key a producer gives the event: its lead, else its customer, else its id."""
    if kind in LEAD_KINDS:
        return str(event["lead_id"]).encode()
    if "customer_id" in event:
        return str(event["customer_id"]).encode()
    return str(event["event_id"]).encode()


def kind_of(kind: str) -> EventKind | BusinessKind:
    return EventKind(kind) if kind in LEAD_KINDS else BusinessKind(kind)


def process_all(
    engine: Engine, messages: list[RawMessage], now: float, batch: int = 1000, partitions: int = 1
) -> list[BatchResult]:
    """Process the messages as a worker would: what the engine forwards to the internal
    customers topic comes back to it (partition by key over ``partitions``) in a later batch."""
    pending, results, offset = list(messages), [], 0
    topic = engine.settings.topic("internal.customers")
    while pending:
        chunk, pending = pending[:batch], pending[batch:]
        result = engine.process(chunk, now)
        results.append(result)
        for key, value, _ in [*result.forward, *result.deals]:
            offset += 1
            part = zlib.crc32(key.encode()) % partitions
            pending.append(RawMessage(CUSTOMERS, topic, part, offset, key.encode(), value, None))
    return results


def engine_samples(
    engine: Engine,
    now: float,
    owners_only: bool = False,
    on_topic: Mapping[TargetKey, float] | None = None,
) -> list[Sample]:
    """Every sample of one engine that owns every key, as a single worker would export it
    (``owners_only``: what the owners export whole for subscribers, counts included)."""
    owned: dict[str, list[Summary]] = {}
    for part in engine.partitions.values():
        for key, summary in summaries(part, engine.clock, now).items():
            owned.setdefault(key, []).append(summary)
    settings = engine.settings
    in_force = targets_in_force(settings.activity_targets, on_topic or {})
    daily = daily_attempt_targets(in_force)
    ctx = ReadContext(now, settings.label_cap, daily, list(daily), in_force)
    samples = (
        []
        if owners_only
        else list(split_samples(engine.partitions.values(), engine.clock, now, settings.label_cap))
    )
    samples += whole_samples(owned, engine.clock, ctx, with_counts=owners_only)
    return samples


def differences(
    got: dict[SeriesKey, float], want: dict[SeriesKey, float], tolerance: float = 1e-6
) -> dict[str, Any]:
    """What differs between scraped KPIs and the truth (empty when they agree)."""
    got = {k: v for k, v in got.items() if k[0].startswith("sales_") and k[0] not in NOW_DEPENDENT}
    want = {k: v for k, v in want.items() if k[0] not in NOW_DEPENDENT}
    out: dict[str, Any] = {}
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    wrong = {
        k: (got[k], want[k])
        for k in set(got) & set(want)
        if abs(got[k] - want[k]) > tolerance * max(1.0, abs(want[k]))
    }
    if missing:
        out["missing"] = sorted(missing, key=str)[:10]
    if extra:
        out["extra"] = sorted(extra, key=str)[:10]
    if wrong:
        out["wrong (got, want)"] = dict(list(wrong.items())[:10])
    return out
