"""A restart's recovery, in-process: what a worker restarted on its data dir after a
SIGTERM does between its changelogs loaded from disk and ``/readyz`` (``Topology
._on_recovered``), timed in process time on the take-over part's history.

``python -m benchmarks.recovery --leads 100000`` builds the history's state with one
in-process engine (the take-over part's history: ``takeover_history``), writes each
partition's snapshot as a SIGTERM would, then hands a new topology the changelog records
that its data dir would load (every lead, customer and partial as the bytes its changelog
holds) and times its recovery from them, step by step. ``--profile FILE`` writes a cProfile
of the recovery. No broker, no worker process: the figures are the recovery's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pickle
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import orjson
from faust.types import TP

from benchmarks.options import BenchOptions
from benchmarks.takeover import ENDED_AGO, noon_zone, takeover_history
from streamproc.business_hours import SlaClock
from streamproc.config import Settings
from streamproc.contract.events import BusinessKind, EventKind
from streamproc.engine.engine import CUSTOMERS, Engine, RawMessage
from streamproc.engine.lead import LeadState
from streamproc.engine.sla_watch import AlertWatch
from streamproc.runtime.heap import freeze_after_full_collections
from streamproc.state.disk import Mark
from streamproc.state.snapshots import Snapshots
from streamproc.state.store import DiskStore, disk_stores

__all__ = ["main"]

_LEAD_KINDS = frozenset(k.value for k in EventKind)
_BATCH = 1000


def _messages(settings: Settings, leads: int, end: float) -> Iterator[RawMessage]:
    events, _ = takeover_history(settings, leads, BenchOptions(), end)
    for offset, (kind, event) in enumerate(events):
        key = str(event.get("lead_id") or event.get("customer_id") or event["event_id"])
        message_kind = EventKind(kind) if kind in _LEAD_KINDS else BusinessKind(kind)
        partition = zlib.crc32(key.encode()) % settings.partitions
        value = orjson.dumps(event)
        yield RawMessage(
            message_kind, settings.topic(kind), partition, offset, key.encode(), value, None
        )


def build(settings: Settings, leads: int, now: float) -> Engine:
    """One engine that read the whole history, business events and customers included."""
    engine = Engine(settings, {})
    topic = settings.topic("internal.customers")
    batch: list[RawMessage] = []
    forwarded = 0

    def process(chunk: list[RawMessage]) -> None:
        nonlocal forwarded
        result = engine.process(chunk, now)
        back = []
        for key, value, _ in [*result.forward, *result.deals]:
            forwarded += 1
            p = zlib.crc32(key.encode()) % settings.partitions
            back.append(RawMessage(CUSTOMERS, topic, p, forwarded, key.encode(), value, None))
        for lead in result.changed:
            lead.pack()
        if back:
            process(back)

    for message in _messages(settings, leads, now - ENDED_AGO):
        batch.append(message)
        if len(batch) == _BATCH:
            process(batch)
            batch = []
    process(batch)
    return engine


MARK = Mark(1, 1, b"\x01" * 16)


MOVED = Mark(2, 2, b"\x02" * 16)


def _marks_of(settings: Settings, partition: int) -> dict[str, Mark | None]:
    """The disk marks of the snapshot and the restart: the same (nothing written since)."""
    return {"leads": MARK, "customers": MARK}


def _moved_on(settings: Settings, partition: int) -> dict[str, Mark | None]:
    """Disk marks the snapshots were not taken at (written to since): rebuilt."""
    return {"leads": MOVED, "customers": MARK}


def _records(engine: Engine) -> dict[str, Any]:
    """What a restart's data dir loads into each table: changelog bytes by key."""
    return {
        "leads": {lead.lead_id.encode(): lead.dumps() for lead in engine.leads.values()},
        "customers": {c.customer_id.encode(): c.dumps() for c in engine.customers.values()},
        "partitions": {lead.lead_id.encode(): lead.partition for lead in engine.leads.values()},
    }


def _settings(data_dir: Path, zone: str) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, timezone=zone)  # type: ignore[call-arg]


def _state(leads: int, cache: Path, work: Path) -> dict[str, Any]:
    """The built state's records and aggregates (cached in ``cache``: the build takes a
    while)."""
    path = cache / f"recovery-{leads}.pickle"
    if path.exists():
        state: dict[str, Any] = pickle.loads(path.read_bytes())  # noqa: S301 - our own cache
        return state
    now = time.time()
    settings = _settings(work, noon_zone(now))
    started = time.process_time()
    engine = build(settings, leads, now)
    sys.stderr.write(f"built {len(engine.leads)} leads in {time.process_time() - started:.1f} s\n")
    state = {**_records(engine), "aggregates": engine.partitions, "zone": settings.timezone}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(state))
    return state


def _write_snapshots(settings: Settings, state: dict[str, Any]) -> None:
    """The snapshots a SIGTERM leaves: the aggregates, and the SLA deadlines the running
    worker's watch held (those long due were taken out by its alert rounds)."""
    watch = AlertWatch(settings, SlaClock(settings.business_hours))
    leads = {lead.lead_id: lead for lead in map(LeadState.loads, state["leads"].values())}
    watch.schedule_all(leads.values())
    watch.due(leads, time.time())
    waiting = watch.deadlines(leads)
    snapshots = Snapshots(settings.data_dir, settings)
    for p, part in state["aggregates"].items():
        snapshots.write(p, part, _marks_of(settings, p), waiting.get(p, ()))


class _Steps:
    """Process time spent in named functions, wrapped in place."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        inner = getattr(owner, name)
        label = label or name
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - started

        setattr(owner, name, timed)


async def recover(settings: Settings, state: dict[str, Any], stale: bool) -> dict[str, float]:
    """A new topology's recovery of ``state`` (``DiskStore.load_active``, then
    ``Topology._on_recovered``), in process time, its leads on disk as a restart finds
    them; ``stale``: the snapshots are not used (every lead derived)."""
    from streamproc.worker import topology as module

    _write_snapshots(settings, state)
    topology = module.Topology(settings, optional=frozenset({settings.topic("internal.customers")}))
    steps = _Steps()
    for name in ("decode_recovered", "decode_recovered_customers"):
        steps.wrap(module, name)
    steps.wrap(topology, "_load_snapshots", "snapshots")
    steps.wrap(topology.engine, "rebuild")
    steps.wrap(topology.alerts.watch, "schedule_all")
    every = set(range(settings.partitions))
    topology.active_partitions = lambda: every  # type: ignore[method-assign]
    marks = _moved_on if stale else _marks_of
    topology.snapshots.marks = lambda p: marks(settings, p)  # type: ignore[method-assign]
    store = cast(DiskStore, topology.leads_table.data)
    for p in every:
        records = [(k, v) for k, v in state["leads"].items() if state["partitions"][k] == p]
        store.db.apply(p, records, MARK)
        store._held.add(p)
    topology.engine.customers.update(state["customers"])
    started = time.process_time()
    loaded = time.process_time()
    store.load_active({TP(store.topic, p) for p in every})
    steps.spent["load"] = time.process_time() - loaded
    await topology._on_recovered()
    took = time.process_time() - started
    collected = time.process_time()
    gc.collect()  # what the next full collection walks (then frozen: ``runtime.heap``)
    collected = time.process_time() - collected
    for disk in disk_stores(topology.app):  # the next run opens the same data dir
        await disk.on_stop()
    out = {
        "recovery_s": round(took, 3),
        "leads": len(state["leads"]),
        "next_full_collection_s": round(collected, 3),
    }
    return out | {f"{k}_s": round(v, 3) for k, v in steps.spent.items()}


def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(prog="python -m benchmarks.recovery")
    args.add_argument("--leads", type=int, default=100_000)
    args.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    args.add_argument("--profile", type=Path)
    args.add_argument("--repeat", type=int, default=3)
    args.add_argument(
        "--stale", action="store_true", help="snapshots not usable: every lead derived"
    )
    opts = args.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        state = _state(opts.leads, opts.cache, Path(work))
        freeze_after_full_collections()  # as a worker does (``worker.run``)
        gc.collect()
        settings = _settings(Path(work), state["zone"])
        runs = []
        for _ in range(opts.repeat):
            if opts.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                runs.append(asyncio.run(recover(settings, state, opts.stale)))
                profiler.disable()
                profiler.dump_stats(opts.profile)
            else:
                runs.append(asyncio.run(recover(settings, state, opts.stale)))
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
