"""A restart's recovery from its data dir: with the snapshots a SIGTERM left (in the data
dir, or only on the broker for a worker taking over without it), the aggregates and the SLA
deadlines are loaded, no lead is decoded, and the KPIs and the alerts to come are those of
a recovery that derives everything from the leads."""

from __future__ import annotations

import asyncio
import shutil
import time
import zlib
from functools import partial
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.engine.engine import RawMessage
from streamproc.engine.lead import LeadState
from streamproc.partials import codec
from streamproc.partials.codec import encode
from streamproc.partials.owner import PartialsView
from streamproc.state.disk import Mark
from streamproc.state.snapshots import Snapshots
from streamproc.state.store import DiskStore
from streamproc.tools.sales_team import history
from streamproc.worker.partials import disk_records
from streamproc.worker.topology import Topology
from tests.unit.engine.test_snapshot import samples

MARKS = {"leads": Mark(9, 9, b"\x09" * 16), "customers": None}
PARTITIONS = 2


def _topology(data_dir: Path, marks: dict[str, Mark | None] = MARKS) -> Topology:
    settings = Settings(_env_file=None, data_dir=data_dir, partitions=PARTITIONS)
    topology = Topology(settings)
    every = set(range(PARTITIONS))
    topology.active_partitions = lambda: every  # type: ignore[method-assign]
    topology.snapshots.marks = lambda p: marks  # type: ignore[method-assign]
    return topology


def _feed(topology: Topology, now: float, upto: int | None = None) -> None:
    """A team's last two hours: leads waiting for a first contact among them (the first
    ``upto`` events only, if given)."""
    events = list(history(topology.settings, 1200, 300, 3600.0, end=now))[:upto]
    messages = []
    for offset, (kind, event) in enumerate(events):
        key = event["lead_id"].encode()
        p = zlib.crc32(key) % PARTITIONS
        value = orjson.dumps(event)
        messages.append(RawMessage(EventKind(kind), kind, p, offset, key, value, None))
    result = topology.engine.process(messages, now)
    for lead in result.changed:
        topology.alerts.watch.schedule(lead)
        lead.pack()


def _restarted(
    running: Topology, data_dir: Path, marks: dict[str, Mark | None], snapshots: bool = True
) -> Topology:
    """A new topology (on a copy of the running one's snapshots, if ``snapshots``), whose
    leads table's disk copy holds each lead's changelog bytes under its key in its
    partition, loaded as ``DiskStore.load_active`` would."""
    if snapshots:
        shutil.copytree(running.settings.data_dir / "snapshots", data_dir / "snapshots")
    topology = _topology(data_dir, marks)
    store = cast(DiskStore, topology.leads_table.data)
    for p in range(PARTITIONS):
        leads = running.engine.leads.scan({p})
        store.db.apply(
            p,
            ((lead.lead_id.encode(), lead.dumps()) for lead in leads),
            marks["leads"] or MARKS["leads"],
        )
        store._held.add(p)
        store._load(p)
    return topology


def _alerts(topology: Topology, at: float) -> set[str]:
    return {alert.alert_id for _, alert in topology.alerts.watch.due(topology.engine.leads, at)}


@pytest.mark.parametrize("where", ["data dir", "broker", "broker, decoded ahead"])
@pytest.mark.parametrize("stale", [False, True])
def test_a_restart_loads_snapshots_or_rebuilds_with_the_same_kpis_and_alerts(
    tmp_path: Path, stale: bool, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``broker, decoded ahead``: the broker's snapshots decoded while the join waited
    (``SnapshotKeeper.fetch_ahead``) are loaded without being read again, and only if
    they were taken at the marks the tables have now."""
    now = time.time()
    running = _topology(tmp_path / "running")
    _feed(running, now)
    published = running.alerts.watch.due(running.engine.leads, now)  # an alert round
    assert published, "no alert published before the restart"
    for lead, alert in published:
        lead.remember_alert(alert.alert_id)
        lead.pack()
    deadlines = running.alerts.watch.deadlines(running.engine.leads)
    assert min(len(deadlines.get(p, ())) for p in range(PARTITIONS)) >= 5, deadlines
    written = running._write_snapshots()
    assert sorted(written) == list(range(PARTITIONS))
    marks = {**MARKS, "leads": Mark(10, 10, b"\x0a" * 16)} if stale else MARKS
    again = _restarted(running, tmp_path / "again", marks, snapshots=where == "data dir")
    if where == "broker, decoded ahead":
        files, clock = again.snapshots.files, again.engine.clock
        decoded = {
            p: files.decode_published(data, p, clock, now, {"leads": None})
            for p, data in written.items()
        }
        again.snapshots._decoded = {p: d for p, d in decoded.items() if d is not None}
        assert len(again.snapshots._decoded) == PARTITIONS
        # one taken before a disk copy's marks can never be loaded: not decoded
        past = {"leads": Mark(10, 10, b"\x0a" * 16), "customers": None}
        assert not any(files.decode_published(d, p, clock, now, past) for p, d in written.items())
        monkeypatch.setattr(Snapshots, "_read", None)  # not read again
    active, built, kept = again._recover(now, {} if where == "data dir" else written)
    leads: dict[str, Any] = again.engine.leads
    assert active == set(range(PARTITIONS)) and len(leads) == len(running.engine.leads)
    assert all(isinstance(lead, LeadState) for lead in leads.values())
    if stale:  # written to since: derived from every lead
        assert (sorted(kept), built) == ([], len(leads))
    else:
        assert (sorted(kept), built) == ([0, 1], 0)
        assert all(lead._undecoded for lead in leads.values()), "a lead was decoded"
    for p, part in running.engine.partitions.items():
        assert samples(again.engine.partitions[p], now) == samples(part, now)
    if not stale:  # (derived, those of breaches older than the backfill horizon are too)
        assert again.alerts.watch.deadlines(leads) == deadlines
    later = [now + 60 * m for m in range(1, 60)]
    assert [_alerts(again, t) for t in later] == [_alerts(running, t) for t in later]


def test_a_rebalance_keeps_the_deadlines_of_the_partitions_it_leaves_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partitions a worker keeps through a rebalance keep their SLA deadlines without
    their leads being read again (50,000 leads: ~0.6 s of a survivor's hand-over), and
    the alerts to come are those of a worker that never rebalanced."""
    now = time.time()
    running, twin = _topology(tmp_path / "running"), _topology(tmp_path / "twin")
    _feed(running, now)
    _feed(twin, now)  # the same events
    watch = running.alerts.watch
    before = watch.deadlines(running.engine.leads)
    assert sum(map(len, before.values())) >= 10, before
    leads, real_scan = type(running.engine.leads), type(running.engine.leads).scan
    read: list[set[int]] = []

    def scan(self: Any, partitions: set[int]) -> Any:
        read.append(set(partitions))
        return real_scan(self, partitions)

    monkeypatch.setattr(leads, "scan", scan)
    _, built, kept = running._recover(now, {})
    assert (built, kept, read) == (0, {}, [set()])  # no lead read again
    assert watch.deadlines(running.engine.leads) == before
    # a partition whose changelog another worker wrote to meanwhile: its leads are read
    cast(DiskStore, running.leads_table.data).last_read = {0: 3, 1: 0}
    running._recover(now, {})
    assert read[-1] == {0} and watch.deadlines(running.engine.leads) == before
    later = [now + 60 * m for m in range(1, 60)]
    assert [_alerts(running, t) for t in later] == [_alerts(twin, t) for t in later]


async def test_a_recovery_overtaken_by_a_rebalance_during_its_fetch_leaves_it_to_the_next(
    tmp_path: Path,
) -> None:
    """Faust never cancels a recovery's callback: a rebalance that comes while it fetches
    the broker's snapshots must not see it derive partitions whose leads are not read yet
    (empty aggregates, kept as if derived) nor mark the worker ready mid-rebalance."""
    topology = _topology(tmp_path / "w")
    fetched: list[list[int]] = []

    async def fetch(partitions: list[int]) -> dict[int, bytes]:
        fetched.append(list(partitions))
        await topology._on_revoked(topology.app)  # the next rebalance begins
        return {}

    topology.snapshots.fetch = fetch  # type: ignore[method-assign]
    await topology._on_recovered()
    assert fetched == [list(range(PARTITIONS))]
    assert not topology.ready and topology.engine.partitions == {}


@pytest.mark.parametrize("moved", [False, True])
def test_snapshots_decoded_ahead_load_only_at_the_marks_they_were_read_at(
    tmp_path: Path, moved: bool
) -> None:
    """Decoded before the join (``SnapshotKeeper.decode_ahead``), a snapshot is loaded
    without its file; if the changelog moved during the join, every lead is derived."""
    now = time.time()
    running = _topology(tmp_path / "running")
    _feed(running, now)
    running._write_snapshots()
    again = _restarted(running, tmp_path / "again", MARKS)
    again.snapshots.decode_ahead(again.engine.clock)
    asyncio.run(again.snapshots.fetch([]))  # what the recovery awaits before its load
    shutil.rmtree(again.settings.data_dir / "snapshots")  # so only the decoded ones remain
    if moved:
        moved_marks = {**MARKS, "leads": Mark(10, 10, b"\x0a" * 16)}
        again.snapshots.marks = lambda p: moved_marks  # type: ignore[method-assign]
    _, built, kept = again._recover(now, {})
    leads = again.engine.leads
    assert (sorted(kept), built) == (([], len(leads)) if moved else ([0, 1], 0))
    for p, part in running.engine.partitions.items():
        assert samples(again.engine.partitions[p], now) == samples(part, now)


def _partials_on_disk(tmp_path: Path, name: str) -> tuple[Topology, DiskStore, dict[bytes, bytes]]:
    """A new topology whose partials table's disk copy holds, in every partition, what a
    running worker's full round published: (it, that store, the table the round made)."""
    now = time.time()
    running = _topology(tmp_path / "running")
    _feed(running, now)
    parts, clock = running.engine.partitions, running.engine.clock
    sent = [m for m in running.rounds.publisher.round(parts, clock, now, True) if m is not None]
    table: dict[bytes, bytes] = {}
    writes = running.partials.inbox.apply(table, sent)  # type: ignore[arg-type]
    again = _topology(tmp_path / name)
    store = cast(DiskStore, again.partials_table.data)
    for p in range(PARTITIONS):
        held = [(k, v) for (k, part), v in writes.items() if part == p]
        store.db.apply(p, held, MARKS["leads"])
    return again, store, table


def _load(store: DiskStore, partitions: set[int]) -> None:
    """What the assignment loads."""
    for p in partitions:
        store._held.add(p)
        store._load(p)


async def _refresh_counting_decodes(topology: Topology, monkeypatch: pytest.MonkeyPatch) -> int:
    """The view refreshed as the recovery does: how many partials it decoded."""
    decoded = 0
    real_head = codec._head

    def counted(raw: bytes) -> Any:
        nonlocal decoded
        decoded += 1
        return real_head(raw)

    monkeypatch.setattr(codec, "_head", counted)
    await topology.rounds.refresh_view()
    monkeypatch.undo()
    return decoded


def _serves(topology: Topology, table: dict[bytes, bytes], owned: set[int]) -> None:
    """The view serves what a refresh of the whole table merges for ``owned``."""
    view = topology.reader.owned_summaries()
    expected = PartialsView(PARTITIONS).merged(table, owned)
    assert view.keys() == expected.keys() and expected
    assert {k: encode(v) for k, v in view.items()} == {k: encode(v) for k, v in expected.items()}


@pytest.mark.parametrize("owned", [{0, 1}, {1}])
@pytest.mark.parametrize("ahead", [True, False])
async def test_the_partials_view_merged_ahead_is_adopted_and_not_merged_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: bool, owned: set[int]
) -> None:
    """Merged from the data dir before the join (``PublishRounds.refresh_ahead``), the
    view the recovery's refresh serves is the one a refresh of the loaded table merges,
    for the partitions owned now, and no partial of it is decoded again."""
    again, store, table = _partials_on_disk(tmp_path, "again")
    if ahead:
        again.rounds.refresh_ahead(partial(disk_records, store.db))
        again.rounds._ahead[0].join()  # type: ignore[index]  # its decodes are not counted
    _load(store, owned)
    again.reader.owned = lambda: owned  # type: ignore[method-assign]
    refreshed = await _refresh_counting_decodes(again, monkeypatch)
    _serves(again, table, owned)
    assert (refreshed == 0) == ahead, refreshed


@pytest.mark.parametrize("written_since", [False, True])
async def test_a_hand_over_adopts_the_view_merged_ahead_of_the_partitions_it_brings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written_since: bool
) -> None:
    """A survivor that owned partition 1 merges the keys of partition 0 from its standby
    copy while the join waits (``_on_revoked``), not those it holds already; the
    recovery's refresh then decodes nothing, and serves what a refresh of the whole table
    merges for both partitions. A partial written after that merge (the catch-up read it)
    is merged again."""
    survivor, store, table = _partials_on_disk(tmp_path, "survivor")
    _load(store, {1})  # partition 1 active, partition 0 its standby copy
    survivor.reader.owned = lambda: {1}  # type: ignore[method-assign]
    await survivor.rounds.refresh_view()
    before = survivor.reader.view.merged_keys()
    assert before, "partition 1 owns keys"
    survivor.active_partitions = lambda: {1}  # type: ignore[method-assign]
    survivor._standbys = lambda: {0}  # type: ignore[method-assign]
    await survivor._on_revoked(survivor.app)  # the hand-over's rebalance begins
    thread, ahead = survivor.rounds._ahead  # type: ignore[misc]
    thread.join()
    assert ahead.merged_keys() and not ahead.merged_keys() & before, "merged twice"
    if written_since:  # one of partition 0's summaries, another's bytes now
        keys = [key for key, _ in store.db.items(0)]
        table[keys[0]] = table[keys[1]]
        store.db.apply(0, [(keys[0], table[keys[0]])], MARKS["leads"])
    _load(store, {0})  # the hand-over's assignment loads the standby partition
    survivor.reader.owned = lambda: {0, 1}  # type: ignore[method-assign]
    decoded = await _refresh_counting_decodes(survivor, monkeypatch)
    assert (decoded > 0) == written_since, f"{decoded} partials decoded again after the join"
    _serves(survivor, table, {0, 1})


def test_a_kept_partition_another_worker_wrote_to_meanwhile_is_recovered_anew(
    tmp_path: Path,
) -> None:
    """Bug 19: a worker out of the group (frozen past its session) gets back a partition
    another worker wrote to meanwhile. The catch-up brings its disk copy to the log's end;
    the aggregates it held are stale: the partition is recovered as a new one, from the
    disk copy, and its KPIs are those of the worker that saw every event."""
    now = time.time()
    stale, other = _topology(tmp_path / "stale"), _topology(tmp_path / "other")
    _feed(stale, now, upto=800)  # then it froze
    _feed(other, now)  # the other worker went on
    kept_before = samples(stale.engine.partitions[1], now)
    store = cast(DiskStore, stale.leads_table.data)
    newer = Mark(20, 20, b"\x14" * 16)
    written = other.engine.leads.scan({0})
    store.db.apply(0, ((lead.lead_id.encode(), lead.dumps()) for lead in written), newer)
    store._held.update({0, 1})
    store._load(0)
    store.last_read = {0: 400, 1: 0}  # what the catch-up read: partition 0 was written to
    asyncio.run(stale._on_assigned(stale.app))
    assert 0 not in stale.engine.partitions and 0 not in store._loaded
    store._load(0)  # as ``DiskStore.load_active`` does for a partition not loaded
    _, built, _ = stale._recover(now, {})
    assert built == len(list(other.engine.leads.scan({0})))
    assert samples(stale.engine.partitions[0], now) == samples(other.engine.partitions[0], now)
    assert samples(stale.engine.partitions[1], now) == kept_before  # not written to: kept
