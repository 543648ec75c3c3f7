"""A partition's aggregates written as a snapshot and read back are the same aggregates:
every window's samples at every level (periods, quantiles, the archive) and the live ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.facts import Fact
from streamproc.engine.snapshot import SnapshotError, deadlines, decode, encode, read_meta
from streamproc.engine.windows import HOUR, MINUTE, WindowClock
from tests.support.facts import fact
from tests.unit.engine.test_aggregates import DAY, NOW, ZONE, _cost, _ops, _run, windows

QS = (0.0, 0.25, 0.5, 0.9, 0.99, 1.0)


def samples(part: PartitionAggregates, now: float) -> dict:  # type: ignore[type-arg]
    """Every window's and live accumulator's count, total, values and quantiles, exactly."""
    out = {}
    for key, acc in windows(part, now):
        values = None if acc.values is None else sorted(acc.values.items())
        quantiles = acc.quantiles(QS) if acc.count else None
        out[key] = (acc.count, acc.total, values, quantiles)
    for family, per_labels in part.live.items():
        for labels, acc in per_labels.items():
            values = None if acc.values is None else sorted(acc.values.items())
            out[family, labels, "live"] = (acc.count, acc.total, values)
    return out


def round_trip(part: PartitionAggregates, now: float) -> PartitionAggregates:
    meta, body, tail = read_meta(encode(part, {"version": 1}))
    assert meta == {"version": 1} and deadlines(body) == []
    return decode(body, tail, part.clock, now)


_deadlines = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=12),
        st.sampled_from([1, 2]),
        st.floats(0, 4e9, allow_nan=False, allow_infinity=False),
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(_deadlines)
def test_the_sla_deadlines_read_back_the_same(waiting: list[tuple[str, int, float]]) -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    _, body, _ = read_meta(encode(part, {"version": 2}, waiting))
    assert deadlines(body) == waiting


def test_damaged_deadlines_are_refused() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    _, body, _ = read_meta(encode(part, {"version": 2}, [("L1", 1, NOW)]))
    for damaged in ([["L1", 3, NOW]], [["L1", 1, "soon"]], [["L1", 1]], None):
        with pytest.raises(SnapshotError):
            deadlines({**body, "deadlines": damaged})
    with pytest.raises(SnapshotError):
        deadlines({k: v for k, v in body.items() if k != "deadlines"})


@settings(max_examples=200, deadline=None)
@given(_ops, st.lists(st.integers(0, 10_000), max_size=5), st.integers(0, 3 * HOUR))
def test_a_snapshot_reads_back_as_the_same_aggregates(
    ops: list,  # type: ignore[type-arg]
    archived: list[int],
    later: int,
) -> None:
    part = PartitionAggregates(WindowClock(ZONE, fiscal_start_month=4), NOW)
    applied: list[Fact] = []
    now = _run(part, ops, NOW, applied)
    for i in archived:  # leads forgotten: their period facts in the archive
        if applied:
            gone = applied.pop(i % len(applied))
            part.apply([gone], -1)
            part.archive([gone])
    loaded = round_trip(part, now)
    assert (loaded.wm_minute, loaded.wm_hour, loaded.wm_day, loaded.wm_period) == (
        part.wm_minute,
        part.wm_hour,
        part.wm_day,
        part.wm_period,
    )
    assert samples(loaded, now) == samples(part, now)
    # and it lives on as the original does: the same facts, the same prune
    more = [fact("first_contact", ("r1",), now - 30, 2.5), fact("attempt", ("r2", "call"), now, 1)]
    for p in (part, loaded):
        p.apply(more, 1)
        p.prune(now + later)
    assert samples(loaded, now + later) == samples(part, now + later)


def test_a_damaged_snapshot_is_refused() -> None:
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    part.apply([fact("first_contact", ("r1",), NOW - 60, 3.0)], 1)
    data = encode(part, {"version": 1})
    with pytest.raises(SnapshotError):
        read_meta(data[: len(data) // 2])
    with pytest.raises(SnapshotError):
        read_meta(b"not a snapshot at all")
    _, body, tail = read_meta(data)
    with pytest.raises(SnapshotError):
        decode(body, tail[:-3], part.clock, NOW)  # an array cut short
    with pytest.raises(SnapshotError):
        decode({**body, "windowed": [["first_contact", ["r1"], []]]}, tail, part.clock, NOW)
    for windowed in (None, {}, "series"):
        with pytest.raises(SnapshotError):
            decode({**body, "windowed": windowed}, tail, part.clock, NOW)


def test_a_prepaid_year_reads_back_sparse_and_lives_on_the_same() -> None:
    """A cost's shares of the year to come are written as the buckets ahead they are (a
    few KB of arrays, not a year of minutes: ~19 MB for its three series' minute and hour
    levels before), read back as such, and enter the windows as the original's do."""
    clock = WindowClock(ZONE, fiscal_start_month=4)
    part = PartitionAggregates(clock, NOW)
    start = clock.midnight(clock.day(NOW) + 1) + 9 * HOUR
    part.apply(_cost(clock, start, clock.midnight(clock.day(NOW) + 366)), 1)
    part.apply([fact("attempt", ("r1", "call"), NOW - 60, 1.0)], 1)
    assert part.windowed["cost"][("marketing", "google_ads")].m.ahead is not None
    _, body, tail = read_meta(encode(part, {"version": 1}))
    assert sum(body["blobs"]) < 40_000
    loaded = decode(body, tail, clock, NOW)
    assert loaded.windowed["cost"][("marketing", "google_ads")].m.ahead is not None
    now = NOW
    for later in (0, 10 * MINUTE, 9 * HOUR + 20 * MINUTE, 2 * DAY, 40 * DAY, 200 * DAY):
        now = NOW + later
        for p in (part, loaded):
            p.apply([fact("attempt", ("r1", "call"), now, 1.0)], 1)
            p.prune(now)
        assert samples(loaded, now) == samples(part, now), later


def test_damaged_buckets_ahead_are_refused() -> None:
    clock = WindowClock(ZONE)
    part = PartitionAggregates(clock, NOW)
    part.apply(_cost(clock, NOW + 30 * DAY, NOW + 60 * DAY), 1)
    _, body, tail = read_meta(encode(part, {"version": 1}))
    family, labels, raw = body["windowed"][0]
    minutes = raw[0]
    keys, _, totals = minutes[5]  # the minute level's buckets ahead: keys, counts, totals
    n = len(body["blobs"])
    # counts of another length (the keys' 8-byte items read as 4-byte counts); an empty
    # part (never written: None stands for none ahead)
    cases = [
        (body, [keys, keys, totals]),
        ({**body, "blobs": [*body["blobs"], 0, 0, 0]}, [n, n + 1, n + 2]),
    ]
    for damaged, ahead in cases:
        windowed = [[family, labels, [[*minutes[:5], ahead], *raw[1:]]], *body["windowed"][1:]]
        with pytest.raises(SnapshotError):
            decode({**damaged, "windowed": windowed}, tail, clock, NOW)


def test_each_parsed_series_goes_once_decoded() -> None:
    """The parse of a year's partition is ~16 MB of objects: kept whole until the end of
    the decode, it stood beside all it was decoded into (peak traced 40.4 -> 38.3 MiB for
    a year's four partitions)."""
    part = PartitionAggregates(WindowClock(ZONE), NOW)
    part.apply([fact("first_contact", (f"r{i}",), NOW - 60 * i, 1.5) for i in range(5)], 1)
    _, body, tail = read_meta(encode(part, {"version": 1}))
    assert len(body["windowed"]) == 5
    loaded = decode(body, tail, part.clock, NOW)
    assert body["windowed"] == []
    assert samples(loaded, NOW) == samples(part, NOW)
