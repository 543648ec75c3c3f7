"""The engine alone: hand-computed KPIs, and the same KPIs for any order, batching and repeats."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.contract.partitioning import key_partition
from streamproc.engine.engine import Engine, RawMessage
from streamproc.engine.windows import PERIODS
from streamproc.kpis.compute import split_samples
from tests.support.scenario import Scenario, expected, noon_zone
from tests.support.truth import engine_samples, process_all

SCENARIO = Scenario()
NOW = 1_796_558_400.0  # 2026-12-06T12:00:00Z
SETTINGS = Settings(
    _env_file=None, timezone=noon_zone(SCENARIO.now), activity_targets={"r1": 10}, partitions=4
)


def _messages(order: list[int]) -> list[RawMessage]:
    out = []
    for offset, i in enumerate(order):
        kind, event = SCENARIO.events[i]
        key = event["lead_id"].encode()
        out.append(
            RawMessage(
                EventKind(kind),
                "sales." + kind,
                hash(key) % 4,
                offset,
                key,
                orjson.dumps(event),
                None,
            )
        )
    return out


def _kpis(
    messages: list[RawMessage], batch: int, owners_only: bool = False
) -> dict[tuple[str, tuple], float]:  # type: ignore[type-arg]
    engine = Engine(SETTINGS, {})
    now = SCENARIO.now + 1
    for start in range(0, len(messages), batch):
        process_all(engine, messages[start : start + batch], now)
    samples = engine_samples(engine, now, owners_only)
    out = {}
    for s in samples:
        if s.metric == "sales_oldest_awaiting_contact_seconds":
            continue
        if s.window is not None and s.window.name in PERIODS:
            continue  # the scenario's calendar months depend on the day: see test_periods
        labels = dict(s.labels)
        if s.window is not None:
            labels["window"] = s.window.name
        out[(s.metric, tuple(sorted(labels.items())))] = s.value
    return out


@pytest.mark.parametrize("owners_only", [False, True], ids=["split+whole", "owners"])
def test_every_kpi_matches_the_hand_computation(owners_only: bool) -> None:
    """Split (Prometheus) and owner (metric topics, Redis, /kpis) views give the same truth."""
    got = _kpis(_messages(list(range(len(SCENARIO.events)))), batch=1000, owners_only=owners_only)
    truth = expected()
    assert set(got) == set(truth)
    for key, value in truth.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key


def test_forecast_seed_example() -> None:
    got = _kpis(_messages(list(range(len(SCENARIO.events)))), batch=7)
    assert got[("sales_forecast_value", (("rep", "r1"),))] == 31947.0  # 3,312 + 28,635


@settings(max_examples=40, deadline=None)
@given(
    order=st.permutations(list(range(len(SCENARIO.events)))),
    repeats=st.lists(st.integers(0, len(SCENARIO.events) - 1), max_size=15),
    batch=st.integers(1, 50),
)
def test_any_order_batching_and_duplicates_give_the_same_kpis(
    order: list[int], repeats: list[int], batch: int
) -> None:
    in_order = _kpis(_messages(list(range(len(SCENARIO.events)))), batch=1000)
    scrambled = _kpis(_messages(order + repeats), batch=batch)
    assert scrambled.keys() == in_order.keys()
    for key, value in in_order.items():
        assert scrambled[key] == pytest.approx(value, abs=1e-6), key


def test_eviction_keeps_live_leads_and_forgets_finished_ones() -> None:
    engine = Engine(SETTINGS, {})
    engine.process(_messages(list(range(len(SCENARIO.events)))), SCENARIO.now)
    before = _kpis_of(engine, SCENARIO.now)
    later = SCENARIO.now + 9 * 86400  # every event past the 7-day retention
    engine.prune(later)
    gone = {lead.lead_id for lead in engine.evict(later)}
    # closed deals (L3 won, L4 won, L5 lost), contacted leads (L8, L9) go; waiting leads
    # (L6, L7, L10) and open deals (L1, L2) stay: their live gauges still count them
    assert gone == {"L3", "L4", "L5", "L8", "L9"}
    assert set(engine.leads) == {"L1", "L2", "L6", "L7", "L10"}
    live = ("sales_open_pipeline_value", "sales_forecast_value", "sales_leads_awaiting_contact")
    after = _kpis_of(engine, later)
    assert {k: v for k, v in after.items() if k[0] in live} == {
        k: v for k, v in before.items() if k[0] in live
    }


def test_eviction_from_a_scan_in_slices_forgets_the_same_leads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker scans for candidates between events (outside the state lock), then
    evicts those: the same leads go as with a scan of all, and a lead that got an event
    after the scan stays."""
    from streamproc.engine import engine as engine_module

    monkeypatch.setattr(engine_module, "SCAN_CHUNK", 3)
    engine = Engine(SETTINGS, {})
    engine.process(_messages(list(range(len(SCENARIO.events)))), SCENARIO.now)
    later = SCENARIO.now + 9 * 86400
    scan = list(engine.eviction_candidates(later))
    assert scan.count(None) == len(engine.leads) // 3, "no chance for the loop in the scan"
    assert {c for c in scan if c is not None} >= {"L3", "L4", "L5", "L8", "L9"}
    late = engine.leads["L9"].attempts[0]._replace(ts=later, event_id="L9-after-the-scan")
    engine.leads["L9"].append(late)
    gone = {lead.lead_id for lead in engine.evict(later, scan)}
    assert gone == {"L3", "L4", "L5", "L8"}


def test_open_leads_silent_past_their_retention_leave_the_live_gauges() -> None:
    settings = SETTINGS.model_copy(update={"open_lead_retention_days": 30.0})
    engine = Engine(settings, {})
    engine.process(_messages(list(range(len(SCENARIO.events)))), SCENARIO.now)
    live = ("sales_open_pipeline_value", "sales_forecast_value", "sales_leads_awaiting_contact")
    assert any(k[0] in live for k in _kpis_of(engine, SCENARIO.now))
    still = SCENARIO.now + 21 * 86400  # past the windows, within 30 days of every last event
    engine.prune(still)
    engine.evict(still)
    assert set(engine.leads) == {"L1", "L2", "L6", "L7", "L10"}
    later = SCENARIO.now + 31 * 86400
    engine.prune(later)
    gone = {lead.lead_id for lead in engine.evict(later)}
    assert gone == {"L1", "L2", "L6", "L7", "L10"}
    assert not engine.leads
    assert not [k for k in _kpis_of(engine, later) if k[0] in live], "live facts left behind"


def _kpis_of(engine: Engine, now: float) -> dict[tuple[str, tuple], float]:  # type: ignore[type-arg]
    return {
        (s.metric, tuple(sorted(s.labels.items()))): s.value
        for s in split_samples(engine.partitions.values(), engine.clock, now, 500)
        if s.window is None
    }


def test_each_invalid_message_is_dead_lettered_once_whatever_the_order() -> None:
    """After a seek back a partition's messages can be applied out of offset order: an
    invalid message below one already dead-lettered must still be dead-lettered (a
    per-partition highest-offset mark lost 10 of them in a SIGKILL run), and a repeat not."""
    engine = Engine(SETTINGS, {})
    now = SCENARIO.now + 1

    def bad(offset: int) -> RawMessage:
        return RawMessage(
            EventKind.LEAD_CREATED, "sales.lead-created", 1, offset, b"k", b"not json", None
        )

    dead = []
    for offsets in ([7], [3, 7], [3, 5]):
        result = engine.process([bad(o) for o in offsets], now)
        dead.append(sorted(item.message.offset for item in result.dead_letters))
    assert dead == [[7], [3], [5]]
    assert sorted(engine.dead_marks) == [("sales.lead-created", 1, o) for o in (3, 5, 7)]


@pytest.mark.parametrize("partitioner", ["crc32", "murmur2"])
def test_a_keyless_lead_event_goes_keyed_to_its_leads_partition(partitioner: str) -> None:
    """events.md keys lead events by ``lead_id`` but takes a message without a key: one that
    landed away from its lead's partition is published there again, keyed, not applied
    where it landed (its lead's state is not there); one already there is applied."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, partitions=4, keyless_partitioner=partitioner
    )
    engine = Engine(settings, {})
    key = b"L-keyless"
    home = key_partition(key, 4, partitioner)  # type: ignore[arg-type]
    event = {"event_id": "e1", "lead_id": "L-keyless", "rep_id": "r1", "source": "web"}
    value = orjson.dumps(event | {"occurred_at": "2026-12-06T10:00:00Z"})
    topic = settings.topic("lead-created")

    def message(partition: int, key: bytes | None) -> RawMessage:
        return RawMessage(EventKind.LEAD_CREATED, topic, partition, 0, key, value, None)

    away = (home + 1) % 4
    result = engine.process([message(away, None)], NOW)
    assert result.reroute == [(topic, key, value, home)]
    assert not result.changed and not result.outcomes  # counted where it is applied
    result = engine.process([message(home, None)], NOW)
    assert not result.reroute and [lead.lead_id for lead in result.changed] == ["L-keyless"]
    keyed = Engine(settings, {}).process([message(away, key)], NOW)  # the producer's choice
    assert not keyed.reroute and [lead.lead_id for lead in keyed.changed] == ["L-keyless"]
