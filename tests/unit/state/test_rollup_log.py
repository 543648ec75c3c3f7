"""The rollups' changelog: a crash at any point of an eviction round leaves a recovery that
counts every forgotten lead's facts exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from streamproc.engine.aggregates import PartitionAggregates
from streamproc.engine.lead_store import MemoryLeads
from streamproc.engine.windows import WindowClock
from streamproc.state.changelog import Record
from streamproc.state.rollup_log import Recovered, RollupLog
from tests.support.facts import fact

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp()
NOV = datetime(2026, 11, 3, tzinfo=UTC).timestamp()


class Crash(Exception):
    pass


class Changelog:
    """A changelog that keeps what was written, and can die after a number of records."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.records: list[tuple[bytes, bytes | None, int]] = []
        self.crash_after = crash_after

    async def write(self, records: Iterable[Record]) -> None:
        for key, value, partition in records:
            if self.crash_after is not None and len(self.records) >= self.crash_after:
                raise Crash
            assert value is None or isinstance(value, bytes)
            self.records.append((key, value, partition))

    def store(self, leads: dict[object, object]) -> dict[object, object]:
        """What a recovery reads: the latest value per key (tombstones delete)."""
        out = dict(leads)
        for key, value, _ in self.records:
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out


def _created(lead: int) -> tuple[str, tuple[str, ...], float, float]:
    return fact("created", (f"r{lead % 2}", "s"), NOV + lead, 1.0)


def _last_month(part: PartitionAggregates) -> int:
    bounds = part.clock.bounds("last_month", NOW)
    return sum(a.count for _, a in part.window_accs("created", bounds))


async def _evict(log: RollupLog, part: PartitionAggregates, leads: list[int]) -> None:
    facts = [_created(i) for i in leads]
    part.apply(facts, -1)
    part.archive(facts)
    log.take({0: part}, {0: [f"L{i}" for i in leads]})
    await log.flush({0: part})


def _recover(changelog: Changelog) -> tuple[PartitionAggregates, dict[object, object], RollupLog]:
    """A new owner: the leads still in the store are kept (their facts in the kept part),
    the rollups restored."""
    raw = changelog.store({})
    found = Recovered()
    found.take(MemoryLeads(raw))
    store: dict[object, object] = {k.decode(): v for k, v in raw.items()}  # type: ignore[attr-defined]
    log = RollupLog(changelog)  # type: ignore[arg-type]
    rollups = log.recovered(found, [0], MemoryLeads(store))
    part = PartitionAggregates(WindowClock(UTC), NOW)
    for rollup in rollups[0]:
        part.restore(rollup)
    part.apply([_created(int(str(k)[1:])) for k in store], 1)  # the kept leads' facts
    return part, store, log


@pytest.mark.parametrize("crash_after", [None, *range(0, 12)])
def test_a_crash_anywhere_in_a_round_counts_each_lead_once(crash_after: int | None) -> None:
    async def run() -> None:
        changelog = Changelog()
        # the leads' own records, as the lead log writes them
        changelog.records += [(f"L{i}".encode(), b"state", 0) for i in range(6)]
        log = RollupLog(changelog)  # type: ignore[arg-type]
        part = PartitionAggregates(WindowClock(UTC), NOW)
        part.apply([_created(i) for i in range(6)], 1)
        await _evict(log, part, [0, 1])  # a first round, complete
        changelog.crash_after = (
            None if crash_after is None else len(changelog.records) + crash_after
        )
        with contextlib.suppress(Crash):
            await _evict(log, part, [2, 3, 4])
        assert _last_month(part) == 6
        recovered, store, new_log = _recover(changelog)
        assert _last_month(recovered) == 6, "each lead once: kept or archived"
        assert not {"L0", "L1"} & set(store)
        # the new owner finishes the round, forgets the last lead, and a third one agrees
        changelog.crash_after = None
        await new_log.flush({0: recovered})
        assert not new_log.unfinished
        recovered.apply([_created(5)], -1)
        recovered.archive([_created(5)])
        new_log.take({0: recovered}, {0: ["L5"]})
        await new_log.flush({0: recovered})
        third, store, _ = _recover(changelog)
        assert _last_month(third) == 6
        # a round whose round record was not written forgot nothing: those leads are kept
        assert set(store) == ({"L2", "L3", "L4"} if crash_after == 0 else set())

    asyncio.run(run())


def test_month_records_are_decoded_one_at_a_time_as_they_are_restored() -> None:
    async def run() -> None:
        changelog = Changelog()
        log = RollupLog(changelog)  # type: ignore[arg-type]
        part = PartitionAggregates(WindowClock(UTC), NOW)
        part.apply([_created(i) for i in range(4)], 1)
        await _evict(log, part, [0, 1, 2, 3])
        found = Recovered()
        found.take(MemoryLeads(changelog.store({})))
        (month, (_, raw)), *_ = found.months[0].items()
        assert isinstance(raw, bytes), "kept encoded until restored"
        rollups = RollupLog(changelog).recovered(found, [0], MemoryLeads())[0]  # type: ignore[arg-type]
        first = next(rollups)
        counts = {labels: w[str(month)].count for labels, w in first["created"].items()}
        assert counts == {("r0", "s"): 2, ("r1", "s"): 2}
        assert next(rollups, None) is None

    asyncio.run(run())
