"""Calendar periods: their bounds in the fiscal year and the time zone, the sketch's bound,
and the archive that keeps what forgotten leads contributed."""

from __future__ import annotations

import math
import random
import tracemalloc
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.engine.aggregates import SKETCH_ERROR, Acc, PartitionAggregates, sketched
from streamproc.engine.engine import Engine, RawMessage
from streamproc.engine.windows import WindowClock
from streamproc.kpis.compute import ReadContext, Summary, quantile, summaries, whole_samples
from streamproc.partials.codec import decode, encode
from tests.support.facts import fact
from tests.support.truth import Truth

UTC = ZoneInfo("UTC")
TOKYO = ZoneInfo("Asia/Tokyo")
# 6 December 2026, noon UTC: fiscal year from April -> Q3 is October - December
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "fiscal", "start", "end"),
    [
        ("month", 1, (2026, 12, 1), (2027, 1, 1)),
        ("last_month", 1, (2026, 11, 1), (2026, 12, 1)),
        ("quarter", 1, (2026, 10, 1), (2027, 1, 1)),
        ("last_quarter", 1, (2026, 7, 1), (2026, 10, 1)),
        ("year", 1, (2026, 1, 1), (2027, 1, 1)),
        ("last_year", 1, (2025, 1, 1), (2026, 1, 1)),
        ("quarter", 4, (2026, 10, 1), (2027, 1, 1)),  # fiscal Q3
        ("year", 4, (2026, 4, 1), (2027, 4, 1)),
        ("last_year", 4, (2025, 4, 1), (2026, 4, 1)),
        ("quarter", 2, (2026, 11, 1), (2027, 2, 1)),  # quarters from Feb: Nov - Jan
        ("last_quarter", 2, (2026, 8, 1), (2026, 11, 1)),
        ("year", 2, (2026, 2, 1), (2027, 2, 1)),
    ],
)
def test_period_bounds_follow_the_fiscal_year(
    name: str, fiscal: int, start: tuple[int, int, int], end: tuple[int, int, int]
) -> None:
    bounds = WindowClock(UTC, fiscal).bounds(name, NOW)
    assert (bounds.start, bounds.end) == (_utc(*start), _utc(*end))
    assert bounds.level == "M"
    assert (
        bounds.last_key - bounds.first_key + 1
        == {"month": 1, "quarter": 3, "year": 12}[name.removeprefix("last_")]
    )


def test_the_time_zone_moves_a_boundary_event_to_the_next_month() -> None:
    # 30 November 23:30 UTC is 1 December 08:30 in Tokyo
    boundary = _utc(2026, 11, 30, 23, 30)
    for zone, month, last_month in ((UTC, 0, 1), (TOKYO, 1, 0)):
        part = PartitionAggregates(WindowClock(zone), NOW)
        part.apply([fact("created", ("r1", "s"), boundary, 1.0)], 1)
        counts = {
            name: sum(a.count for _, a in part.window_accs("created", part.clock.bounds(name, NOW)))
            for name in ("month", "last_month")
        }
        assert counts == {"month": month, "last_month": last_month}, zone


def test_a_dst_month_starts_at_local_midnight() -> None:
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 4, 2, 12, tzinfo=paris).timestamp()
    bounds = WindowClock(paris).bounds("last_month", now)  # March: 31 days, one of 23 hours
    assert bounds.start == datetime(2026, 3, 1, tzinfo=paris).timestamp()
    assert bounds.end - bounds.start == 31 * 86400 - 3600


def test_events_before_last_year_are_in_no_period() -> None:
    part = PartitionAggregates(WindowClock(UTC, 4), NOW)
    part.apply([fact("created", ("r1", "s"), _utc(2025, 3, 31, 23), 1.0)], 1)  # before last_year
    part.apply([fact("created", ("r1", "s"), _utc(2025, 4, 1, 1), 1.0)], 1)
    got = [
        sum(a.count for _, a in part.window_accs("created", part.clock.bounds(name, NOW)))
        for name in ("last_year", "year")
    ]
    assert got == [1, 0]


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-3, 1e9))
def test_a_sketched_value_is_within_the_bound(value: float) -> None:
    assert abs(sketched(value) - value) <= SKETCH_ERROR * value * (1 + 1e-9)
    assert sketched(-value) == -sketched(value)
    assert sketched(0.0) == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_period_quantiles_are_within_one_percent(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(5, 2) for _ in range(5000)]
    acc = Acc(dist=True)
    for v in values:
        acc.add_sketched(v, 1)
    for v in values[:1000]:  # retractions are exact: a bucket's count goes down again
        acc.add_sketched(v, -1)
    exact = sorted(values[1000:])
    for q, got in zip((0.5, 0.9, 0.99), acc.quantiles((0.5, 0.9, 0.99)), strict=True):
        want = quantile(exact, q)
        assert abs(got - want) <= SKETCH_ERROR * want, q
    assert acc.count == 4000 and math.isclose(acc.total, sum(values[1000:]))


def _period(part: PartitionAggregates, name: str) -> tuple[int, float]:
    bounds = part.clock.bounds(name, NOW)
    accs = [a for _, a in part.window_accs("first_contact", bounds)]
    return sum(a.count for a in accs), sum(a.total for a in accs)


def test_an_archived_fact_stays_in_its_period_and_restores_elsewhere() -> None:
    part = PartitionAggregates(WindowClock(UTC), NOW)
    facts = [
        fact("first_contact", ("r1",), _utc(2026, 11, 3), 60.0),
        fact("first_contact", ("r1",), _utc(2026, 12, 2), 30.0),
    ]
    part.apply(facts, 1)
    before = {name: _period(part, name) for name in ("month", "last_month", "year")}
    part.apply(facts, -1)  # the lead is forgotten: its facts leave the kept part...
    part.archive(facts)  # ...and stay in the archive
    assert {name: _period(part, name) for name in before} == before
    assert before == {"month": (1, 30.0), "last_month": (1, 60.0), "year": (2, 90.0)}
    _delta, months, dropped = part.take_archived()
    assert months == {2026 * 12 + 10, 2026 * 12 + 11} and not dropped
    assert part.take_archived() == ({}, set(), set())
    # a new owner restores the month records and has the same periods, without the lead
    other = PartitionAggregates(WindowClock(UTC), NOW)
    for month in sorted(months):
        other.restore(part.archived_month(month))
    assert {name: _period(other, name) for name in before} == before


def test_the_owner_counts_each_partitions_period_facts_once() -> None:
    """Two partitions' partials of one rep, merged by the owner (the series it exports
    whole: metric topics, Redis, /kpis): by hand, December has 2 first contacts (30 s,
    45 s), one within the SLA; the year adds November's (60 s). The periods' counted
    multisets once added each count and total twice (2x in Redis, half the SLA ratio)."""
    clock = WindowClock(UTC)
    one, two = PartitionAggregates(clock, NOW), PartitionAggregates(clock, NOW)
    one.apply(
        [
            fact("first_contact", ("r1",), _utc(2026, 11, 3), 60.0),
            fact("first_contact", ("r1",), _utc(2026, 12, 2), 30.0),
            fact("first_contact_in_sla", ("r1",), _utc(2026, 12, 2), 1.0),
        ],
        1,
    )
    two.apply([fact("first_contact", ("r1",), _utc(2026, 12, 3), 45.0)], 1)
    owned: dict[str, list[Summary]] = {}
    for part in (one, two):  # as the owner gets them: encoded, sent, decoded
        for key, summary in summaries(part, clock, NOW).items():
            owned.setdefault(key, []).append(decode(encode(summary)))
    metrics = ("first_contacts", "responded_within_sla_ratio", "response_time_avg_seconds")
    got = {
        (s.metric.removeprefix("sales_"), s.window.name): s.value
        for s in whole_samples(owned, clock, ReadContext(NOW, 50), with_counts=True)
        if s.window is not None and s.window.name in ("month", "year")
        if s.metric.removeprefix("sales_") in metrics
    }
    assert got == {
        ("first_contacts", "month"): 2.0,
        ("first_contacts", "year"): 3.0,
        ("responded_within_sla_ratio", "month"): 0.5,
        ("responded_within_sla_ratio", "year"): pytest.approx(1 / 3),
        ("response_time_avg_seconds", "month"): 37.5,
        ("response_time_avg_seconds", "year"): 45.0,
    }


def test_pruning_drops_archived_months_before_last_year() -> None:
    part = PartitionAggregates(WindowClock(UTC), NOW)
    part.archive([fact("created", ("r1", "s"), _utc(2025, 1, 5), 1.0)])
    part.take_archived()
    part.prune(_utc(2027, 1, 2))  # last_year is 2026 now
    assert part.take_archived()[2] == {2025 * 12}
    assert not part.windowed["created"]


def _won_in(truth: Truth, window: str, now: float) -> dict[str, float]:
    return {
        dict(labels)["source"]: value
        for (metric, labels), value in truth.kpis(now).items()
        if metric == "sales_deals_won" and dict(labels).get("window") == window
    }


def test_an_event_of_a_forgotten_lead_counts_as_a_new_leads() -> None:
    """The documented choice (docs/architecture.md): the forgotten lead's contribution
    stays; an event of it starts a new state whose facts count from then on."""
    settings_ = Settings(_env_file=None, timezone="UTC")
    truth = Truth(settings_)
    created = {"event_id": "e1", "lead_id": "L1", "rep_id": "r1", "source": "referral"}
    won = {"event_id": "e2", "lead_id": "L1", "rep_id": "r1", "to_stage": "won"}
    now = _utc(2026, 11, 20)
    truth.feed(
        [
            ("lead-created", {**created, "occurred_at": "2026-11-02T10:00:00Z"}),
            ("stage-changed", {**won, "occurred_at": "2026-11-03T10:00:00Z", "deal_value": 10}),
        ],
        now,
    )
    # forgotten once its partition's other topics have been idle for a prune interval: they
    # might still hold more of its life
    assert truth.engine.evict(now) == []
    assert [
        lead.lead_id for lead in truth.engine.evict(now + settings_.prune_interval_seconds)
    ] == ["L1"]
    assert not truth.engine.leads
    assert _won_in(truth, "month", now) == {"referral": 1}, "its won deal stays"
    # a repeat of its won event: a lead the worker does not know, whose source is unknown
    truth.feed([("stage-changed", {**won, "occurred_at": "2026-11-03T10:00:00Z"})], now)
    assert _won_in(truth, "month", now) == {"referral": 1, "unknown": 1}


def test_late_means_before_the_start_of_last_year() -> None:
    engine = Engine(Settings(_env_file=None, fiscal_year_start_month=4), {})
    now = NOW  # 6 December 2026: last_year is April 2025 - March 2026
    messages = [
        RawMessage(
            EventKind.LEAD_CREATED,
            "sales.lead-created",
            0,
            offset,
            lead.encode(),
            orjson.dumps(
                {
                    "event_id": lead,
                    "lead_id": lead,
                    "rep_id": "r1",
                    "source": "web",
                    "occurred_at": occurred,
                }
            ),
            None,
        )
        for offset, (lead, occurred) in enumerate(
            [
                ("ten-days", "2026-11-26T12:00:00Z"),
                ("in-last-year", "2025-04-01T00:30:00Z"),
                ("before", "2025-03-31T23:30:00Z"),
            ]
        )
    ]
    result = engine.process(messages, now)
    assert result.outcomes == {
        ("sales.lead-created", "processed"): 2,
        ("sales.lead-created", "late"): 1,
    }


def _archive_bytes(months: int, reps: int = 1_000) -> float:
    """Bytes traced for archiving ``months`` months of ``created`` facts for each of
    ``reps`` series (their pending rollup taken, as the changelog does)."""
    part = PartitionAggregates(WindowClock(UTC), NOW)
    facts = [
        fact("created", (f"r{rep}", "s"), _utc(2026, month, 5), float(rep % 7))
        for rep in range(reps)
        for month in range(1, months + 1)
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        part.archive(facts)
        part.take_archived()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    year = part.clock.bounds("year", NOW)  # the fiscal year of January: 2026
    assert sum(a.count for _, a in part.window_accs("created", year)) == len(facts)
    return used


def test_an_archived_month_costs_bytes_not_objects() -> None:
    """A year's archive of forgotten leads is most of its aggregates (113,755 archived
    months over 16,616 series at 100,000 leads). An ``Acc`` per month, its key and total
    objects in a dict, cost ~200 bytes a month; in a level's arrays, 12 (count, total)."""
    per_month = (_archive_bytes(12) - _archive_bytes(1)) / (11 * 1_000)
    assert per_month < 40, f"{per_month:.0f} bytes an archived month"
