"""The lead cache: at most its capacity of leads in memory, the rest read back from the
disk copy, and the engine's KPIs exactly those of an engine holding every lead."""

from __future__ import annotations

import zlib
from pathlib import Path

import orjson

from streamproc.config import Settings
from streamproc.engine.engine import Engine, RawMessage
from streamproc.engine.lead import Created, LeadState
from streamproc.state.disk import Mark, StateDB
from streamproc.state.lead_cache import LeadCache
from streamproc.tools.sales_team import history
from tests.support.truth import engine_samples, key_of, kind_of

DAY = 86400.0
NOW = 1_780_000_000.0
SETTINGS = Settings(_env_file=None, partitions=2)
MARK = Mark(1, 1, b"\x01" * 16)


def _cache(tmp_path: Path, capacity: int, held: set[int]) -> tuple[LeadCache, StateDB]:
    db = StateDB(tmp_path / "leads")
    cache = LeadCache(capacity)
    cache.attach(lambda: db, lambda: held)
    for partition in sorted(held):
        cache.load(partition)
    return cache, db


def _write(cache: LeadCache, db: StateDB, leads: list[LeadState], gone: list[LeadState]) -> None:
    """What the worker's changelog write does: mark, serialize, the broker, the disk copy."""
    cache.changing(leads)
    seq = cache.seq
    for partition in {lead.partition for lead in leads + gone}:
        records: list[tuple[bytes, bytes | None]] = [
            (lead.lead_id.encode(), lead.dumps()) for lead in leads if lead.partition == partition
        ]
        records += [(lead.lead_id.encode(), None) for lead in gone if lead.partition == partition]
        db.apply(partition, records, MARK)
        cache.written((key for key, _ in records), seq)


def _lead(lead_id: str, partition: int = 0, ts: float = NOW) -> LeadState:
    lead = LeadState(lead_id, partition)
    lead.add(Created(ts, f"{lead_id}-c", "r1", "web", "t1", False, None))
    return lead


def _messages() -> list[RawMessage]:
    """Three weeks of a team, scrambled with duplicates: some leads past retention."""
    events = history(SETTINGS, 4000, 400, 21 * DAY, end=NOW, scramble=True)
    out = []
    for offset, (kind, event) in enumerate(events):
        key = key_of(kind, event)
        partition = zlib.crc32(key) % SETTINGS.partitions
        value = orjson.dumps(event)
        out.append(
            RawMessage(kind_of(kind), SETTINGS.topic(kind), partition, offset, key, value, None)
        )
    return out


def test_kpis_with_a_small_cache_equal_those_with_every_lead_in_memory(tmp_path: Path) -> None:
    cache, db = _cache(tmp_path, capacity=100, held={0, 1})
    cached, whole = Engine(SETTINGS, cache), Engine(SETTINGS, {})
    messages = _messages()
    most = 0
    for start in range(0, len(messages), 50):
        batch = messages[start : start + 50]
        whole.process(batch, NOW)
        result = cached.process(batch, NOW)
        _write(cache, db, result.changed, [])
        for lead in result.changed:
            lead.pack()
        most = max(most, len(cache.hot))
        cache.trim()
        assert len(cache.hot) <= 100
    assert cache.disk_reads > 100, "leads were read back from disk"
    assert most > 100, "batches brought more leads than the cache holds"
    assert engine_samples(cached, NOW) == engine_samples(whole, NOW)
    assert sorted(lead.lead_id for lead in cached.leads.scan({0, 1})) == sorted(whole.leads)

    # Forgetting past retention scans the leads on disk too (their latest event time read
    # from the first field alone) and ends as the engine holding every lead does.
    candidates = [c for c in cached.eviction_candidates(NOW) if c is not None]
    assert len(candidates) > len(cache.hot)
    gone = cached.evict(NOW, candidates)
    expected = whole.evict(NOW)
    assert gone and sorted(g.lead_id for g in gone) == sorted(g.lead_id for g in expected)
    _write(cache, db, [], gone)
    assert engine_samples(cached, NOW) == engine_samples(whole, NOW)
    assert sorted(cached.leads) == sorted(whole.leads)


def test_a_changed_lead_stays_in_memory_until_the_disk_has_that_change(tmp_path: Path) -> None:
    cache, db = _cache(tmp_path, capacity=100, held={0})
    for i in range(150):
        cache[f"L{i}"] = _lead(f"L{i}")
    assert cache.trim() == 0, "none is on disk yet"
    _write(cache, db, [cache[f"L{i}"] for i in range(150)], [])
    assert cache.trim() == 50 and "L0" not in cache.hot and "L149" in cache.hot

    # Changed after a write serialized it: that write's return keeps it in memory.
    early = cache.get("L0")
    assert early is not None and early.dumps() == _lead("L0").dumps()  # read from disk
    seq_before = cache.seq
    early.add(Created(NOW + 1, "L0-c2", "r2", "web", "t1", False, None))
    cache.changing([early])
    cache.written([b"L0"], seq_before)
    for i in range(200, 300):
        cache[f"L{i}"] = _lead(f"L{i}")
    _write(cache, db, [cache[f"L{i}"] for i in range(200, 300)], [])
    cache.trim()
    assert cache.hot.get("L0") is early, "its change is not on disk: it stays"


def test_a_deleted_lead_reads_as_absent_until_its_tombstone_is_on_disk(tmp_path: Path) -> None:
    cache, db = _cache(tmp_path, capacity=100, held={0})
    lead = _lead("L1")
    cache["L1"] = lead
    _write(cache, db, [lead], [])
    del cache["L1"]
    assert cache.get("L1") is None and cache.peek("L1") is None, "not its older state on disk"
    assert db.get(0, b"L1") is not None
    _write(cache, db, [], [lead])
    assert cache.get("L1") is None and db.get(0, b"L1") is None


def test_a_partition_not_held_or_not_loaded_keeps_its_leads_and_records(tmp_path: Path) -> None:
    cache, db = _cache(tmp_path, capacity=100, held={0})
    db.apply(1, [(b"\x00dead-lettered\x00t:1:5", b"1"), (b"L9", _lead("L9", 1).dumps())], MARK)
    assert cache.load(1) == 1 and cache.raw_records() == [b"\x00dead-lettered\x00t:1:5"]
    leads = [_lead(f"L{i}", 1) for i in range(150)]
    for lead in leads:
        cache[lead.lead_id] = lead
    _write(cache, db, leads, [])
    assert cache.trim() == 0, "partition 1's copy is not caught up: memory is all it has"
    got = cache.get("L9")
    assert got is not None and got.partition == 1
    cache.unload(1)
    assert cache.hot == {} and cache.get("L9") is None


def test_records_read_by_the_catch_up_replace_what_memory_held(tmp_path: Path) -> None:
    cache, db = _cache(tmp_path, capacity=100, held={0})
    cache["L1"] = _lead("L1")
    newer = _lead("L1", ts=NOW + 5)
    db.apply(0, [(b"L1", newer.dumps())], MARK)
    cache.read_into(0, [(b"L1", newer.dumps()), (b"\x00rollup\x000\x00700", b"r")])
    got = cache.get("L1")
    assert got is not None and got.last_ts == NOW + 5
    assert cache.raw_records() == [b"\x00rollup\x000\x00700"]


def test_the_latest_event_time_is_read_from_the_first_field_alone() -> None:
    lead = _lead("L1", ts=NOW - 3.5)
    raw = lead.dumps()
    assert raw.startswith(b'{"t":') and LeadState.last_ts_of(raw) == NOW - 3.5
    older = orjson.loads(raw)
    del older["t"]  # written before the field was
    assert LeadState.last_ts_of(orjson.dumps(older)) == NOW - 3.5
