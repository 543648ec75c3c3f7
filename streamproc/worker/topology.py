"""The Faust topology of one worker: topics, tables, routes and timers, wired to the engine.

One event's path: the consumer's fetch loop (``kafka.transport``) hands a fetch of the
event topics to ``EventBatches`` (``worker.batches``), which applies it to the engine
(``engine``), changelogs the leads (``state.lead_log``) and acks it. The publish round
(``worker.partials``) sends each partition's partial summaries to the owners of their keys
and hands the owned series to the sinks; scrapes read them (``worker.reading``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from functools import partial
from itertools import chain
from typing import Any, cast

import faust
from aiorwlock import RWLock
from faust.exceptions import NotReady
from prometheus_client import CollectorRegistry

from streamproc.business_hours import SlaClock
from streamproc.config import Settings
from streamproc.contract.events import BusinessKind, EventKind
from streamproc.contract.outputs import Alert, DeadLetter
from streamproc.engine.engine import CUSTOMERS, Engine, MessageKind
from streamproc.engine.facts import FactDeriver
from streamproc.engine.sla_watch import AlertWatch
from streamproc.kafka.app import (
    Table,
    connect,
    create_app,
    leave_group,
    store_of,
    take_events,
)
from streamproc.kafka.batch_send import aiokafka_producer
from streamproc.kafka.lease import MembershipLost, membership_lease
from streamproc.kafka.snapshot_topic import AGGREGATES, COPY
from streamproc.kafka.targets import TargetsReader
from streamproc.kafka.topics import topic_names
from streamproc.kafka.transport import BatchRoute, route_batches
from streamproc.kpis.catalogue import KPIS
from streamproc.kpis.compute import Sample
from streamproc.partials.owner import PartialsView
from streamproc.runtime.heap import collections_paused
from streamproc.runtime.slices import Stretches
from streamproc.serving.alerts import AlertPublisher
from streamproc.serving.http import register_routes
from streamproc.serving.prometheus import LagCollector, LeadCacheCollector, ProcessorMetrics
from streamproc.serving.sinks.base import Sink
from streamproc.serving.sinks.metric_topics import MetricTopicsSink
from streamproc.serving.sinks.redis_snapshot import RedisSnapshotSink
from streamproc.serving.web_security import WebSecurity
from streamproc.state.customer_log import CustomerLog, decode_recovered_customers
from streamproc.state.lead_cache import LeadCache
from streamproc.state.lead_log import LeadLog, decode_recovered
from streamproc.state.rollup_log import LEADS_PER_ROUND, Recovered, RollupLog
from streamproc.state.snapshots import Snapshot
from streamproc.state.store import STORE_URL, DiskStore, disk_stores, register_store
from streamproc.worker.batches import CustomerFlow, EventBatches
from streamproc.worker.partials import PartialsIntake, PublishRounds, disk_records
from streamproc.worker.reading import KpiReader
from streamproc.worker.snapshotting import SnapshotKeeper
from streamproc.worker.standbys import StandbyIntake

__all__ = ["Topology", "build_topology"]

# The longest the threads of ``start_ahead`` wait for the first join's request before they
# start anyway (it comes within a second of Faust's start: 0.15 - 0.58 s at 100,000 leads).
AHEAD_AFTER_SECONDS = 5.0

log = logging.getLogger(__name__)
REDIS_ALERT_CHANNEL = "streamproc:alerts"
# How often the lead cache is brought back to its size: between two, memory holds at most
# the leads read in a second beyond it (~10,000 at the bench's rates).
TRIM_SECONDS = 1.0


class Topology:
    """Everything one worker runs; ``build_topology`` creates it, ``worker.run`` starts it."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        optional: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.names = topic_names(settings)
        self.web_security = WebSecurity(settings)
        self.app = app = create_app(settings, **self.web_security.app_options())
        self.lease = membership_lease(app)
        register_store()
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.metrics = ProcessorMetrics.create(self.registry)
        self.registry.register(LagCollector(self.consumer_lag))
        self.lead_topics = frozenset(self.names.inputs.values())
        self.kinds: dict[str, MessageKind] = {
            self.names.inputs[k]: EventKind(k) for k in self.names.inputs
        }
        # The optional topics that exist (``check_topics``): customers only with them.
        self.with_customers = self.names.customers in optional
        business = {t: BusinessKind(k) for k, t in self.names.business.items() if t in optional}
        if self.with_customers:
            self.kinds.update(business)
            self.kinds[self.names.customers] = CUSTOMERS
        self.leads_table = self._table("leads", cache_size=settings.lead_cache_size)
        self.partials_table = self._table("partials")
        self.customers_table = self._table("customers") if self.with_customers else None
        self.sla_clock = SlaClock(settings.business_hours)
        deriver = FactDeriver(settings, due=self.sla_clock.due)
        customers = store_of(self.customers_table) if self.customers_table is not None else None
        self.lead_cache = cast(LeadCache, store_of(self.leads_table))
        self.engine = Engine(settings, self.lead_cache, deriver, customers)
        self.registry.register(LeadCacheCollector(self._lead_cache_stats))
        self.events_topic = self._topic(*self.kinds)
        self.partials_topic = self._topic(self.names.partials)
        self.metric_topics = {name: self._topic(name) for name in self.names.metrics.values()}
        self.lead_log = LeadLog(self.leads_table)
        self.rollup_log = RollupLog(self.lead_log.writer)
        self.snapshots = SnapshotKeeper(
            settings,
            lambda: disk_stores(self.app),
            self._derived_stores,
            lambda: aiokafka_producer(self.app),
            self.names.snapshots if self.names.snapshots in optional else None,
        )
        for store in disk_stores(app):
            store.closed_by_owner = True  # after the SIGTERM snapshots: ``_shutting_down``
            store.seeder = self.snapshots.seed
        self.alerts = AlertPublisher(
            AlertWatch(settings, self.sla_clock),
            self._topic(self.names.alerts),
            self.lead_log,
            self.metrics.alerts,
        )
        self.ready = False
        self._rebalances = 0  # revocations so far: a recovery started before one is void
        self._join_requested = threading.Event()  # the first revoke comes right before it
        # Held by whatever changes lead state and changelogs it, until the changelog has it:
        # shared by the batches and the SLA timer, whose changelog writes the writer keeps
        # in order (a batch waited up to ~120 ms for an alert round's two round trips);
        # exclusive for eviction and for a rebalance (``_on_revoked``), which wait for all.
        self.state_lock = RWLock(fast=True)
        self.dead_letters = self._topic(self.names.dead_letter)
        self.events = EventBatches(
            app,
            self.engine,
            self.kinds,
            self.lead_log,
            self.alerts,
            self.metrics,
            self.dead_letters,
            self.state_lock,
            self._ready,
            self._customer_flow(frozenset(business)),
        )
        view = PartialsView(settings.partitions)
        self.targets = TargetsReader(settings, self.names.targets, self._refused_target)
        self.reader = KpiReader(
            settings,
            self.engine,
            view,
            self.registry,
            lambda: self._active([self.names.partials]),
            lambda: self.targets.targets,
        )
        self.redis = RedisSnapshotSink(settings, self._owns, self.metrics.redis_up)
        self.sinks: list[Sink] = [
            MetricTopicsSink(settings, self._send_metric, self._owns),
            self.redis,
        ]
        self.alerts.hooks.append(self._alert_to_redis)
        self.partials = PartialsIntake(app, self.partials_table, settings.partitions, self._ready)
        self.rounds = PublishRounds(
            app, self.engine, self.names.partials, self.partials, view, self.reader, self.sinks,
            self._ready, self.events.keeping_up,
        )  # fmt: skip
        self.standbys = StandbyIntake(disk_stores(app))
        self._wire()

    def _ready(self) -> bool:
        return self.ready

    def _customer_flow(self, business: frozenset[str]) -> CustomerFlow | None:
        if self.customers_table is None:
            return None
        topic = self._topic(self.names.customers)
        return CustomerFlow(topic, CustomerLog(self.customers_table), business)

    def _table(self, name: str, cache_size: int | None = None) -> Table:
        # Raw bytes on the changelog; the engine keeps decoded objects in the same store,
        # whose changelog is also kept on disk (``state.store``: a restart reads its tail).
        table = self.app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=self.settings.partitions,
            store=STORE_URL,
        )
        cast(DiskStore, table.data).configure(self.settings, cache_size)
        return table

    def _topic(self, *names: str) -> faust.TopicT:
        return self.app.topic(*names, key_serializer="raw", value_serializer="raw")

    # --- wiring ----------------------------------------------------------------------------

    def _wire(self) -> None:
        app, s = self.app, self.settings
        app.agent(self.events_topic, name="kpi-events", concurrency=1)(self._consume_events)
        route_batches(
            app,
            BatchRoute(frozenset(self.kinds), self.events.handle, s.batch_size),
            BatchRoute(
                frozenset({self.names.partials}), self.partials.handle, s.batch_size, apart=True
            ),
            BatchRoute(self.standbys.topics, self.standbys.handle, s.batch_size),
        )
        app.agent(self.partials_topic, name="kpi-partials", concurrency=1)(self._consume_partials)
        app.timer(s.publish_interval_seconds, name="publish-partials")(self.rounds.run)
        app.task(self.rounds.refresh_on_arrival)
        app.timer(s.prune_interval_seconds, name="prune-windows")(self._prune)
        app.timer(s.alert_check_interval_seconds, name="sla-watch")(self._check_alerts)
        app.timer(TRIM_SECONDS, name="trim-leads")(self._trim_leads)
        self.leads_table.on_recover(self._on_recovered)
        connect(app.on_partitions_revoked, self._on_revoked)
        connect(app.on_partitions_assigned, self._on_assigned)
        app.task(self._start_sinks)
        app.task(self._read_targets)
        connect(app.on_before_shutdown, self._shutting_down)

    async def _consume_events(self, stream: faust.StreamT[Any]) -> None:
        # Only if the consumer is not ours: ExactConsumer hands the event topics straight
        # to EventBatches (route_batches in _wire), without Faust's per-event path.
        s = self.settings
        async for batch in take_events(stream, s.batch_size, s.batch_seconds):
            await self.events.handle([event.message for event in batch])

    async def _consume_partials(self, stream: faust.StreamT[Any]) -> None:
        # Only if the consumer is not ours (see _consume_events).
        s = self.settings
        async for batch in take_events(stream, s.batch_size, s.batch_seconds):
            await self.partials.handle([event.message for event in batch])

    # --- sinks -----------------------------------------------------------------------------

    async def _start_sinks(self) -> None:
        for sink in self.sinks:
            await sink.start()

    async def _read_targets(self) -> None:
        await self.targets.run()

    async def _refused_target(self, record: Any, reason: str) -> None:
        """A bad target is dead-lettered by the worker owning that partition number of the
        inputs (every worker reads every target: not by all of them)."""
        if record.partition not in self.active_partitions():
            return
        letter = DeadLetter.from_raw(
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            timestamp_ms=record.timestamp,
            value=record.value,
        )
        await self.dead_letters.send(key=record.key, value=letter.model_dump_json().encode())
        # counted as the events' bad input is: the invalid-rate alert sees bad quotas too
        self.metrics.events.labels(record.topic, "invalid").inc()

    async def _stop_sinks(self) -> None:
        for sink in self.sinks:
            await sink.stop()

    async def _shutting_down(self, app: faust.App | None = None, *_: Any, **__: Any) -> None:
        """A SIGTERM, once Faust has applied, changelogged and acked the batch in hand: the
        partitions go to the other workers now, the sinks' last flush comes after.

        Left to Faust, the consumer left the group only after the sinks had stopped (the
        metric topics' last flush alone waited its 5 s timeout at 10,000 leads): a
        survivor got the partitions 5.2 s after the signal instead of ~0.1 s."""
        async with self.state_lock.writer:  # an alert round's changelog write goes first
            durable = self.ready and self._all_written()
            self.ready = False  # nor does a timer change or publish state no longer ours
        try:
            # Written and published before the leave: on Kafka a survivor rejoins at once
            # and would derive without them (on tansu it waits 3 s). 0.2 - 0.3 s at 100,000
            # leads (3.6 MB), 0.85 s at 1,000,000 (24 MB).
            published = await self.snapshots.publish(self._write_snapshots() if durable else {})
            await leave_group(self.app)
            await self.snapshots.publish_copies(published)
            await self._stop_sinks()
        finally:
            self.snapshots.close_stores()

    def _all_written(self) -> bool:
        """Whether the changelog holds everything the aggregates hold: no failed write
        waiting for a retry, no eviction round unfinished."""
        events, customers = self.events, self.events.customers
        return not (
            events.unwritten
            or events.unwritten_marks
            or (customers is not None and customers.unwritten)
            or self.rollup_log.unfinished
        )

    def start_ahead(self) -> None:
        """Before the worker starts: what the first recovery will need, from the data dir
        or, for the partitions it has no copy of, from the broker, prepared in threads
        while the group's join waits (3 s on tansu)."""
        # The threads start their work once the join is requested: started at once, they
        # held the GIL while Faust started, and a restart at 100,000 leads requested its
        # join 0.58 s after its first log line against 0.15 s for an empty data dir.
        after = partial(self._join_requested.wait, AHEAD_AFTER_SECONDS)
        self.snapshots.decode_ahead(self.engine.clock, after)
        stores = disk_stores(self.app)
        no_copy = [
            p
            for p in range(self.settings.partitions)
            if all(store.db.mark(p) is None for store in stores)
        ]
        self.snapshots.fetch_ahead(no_copy, self.engine.clock, (AGGREGATES, COPY), after)
        partials = cast(DiskStore, self.partials_table.data)
        if partials.db.partitions():
            self.rounds.refresh_ahead(partial(disk_records, partials.db), after)
        elif no_copy and self.snapshots.topic is not None:
            records = partial(self.snapshots.prefetched_records, partials.topic)
            self.rounds.refresh_ahead(records, after)

    def _derived_stores(self) -> list[DiskStore]:
        """The stores of the tables the aggregates derive from (leads, customers)."""
        tables = [self.leads_table, self.customers_table]
        return [cast(DiskStore, t.data) for t in tables if t is not None]

    def _write_snapshots(self) -> dict[int, bytes]:
        """Each partition's aggregates and its leads' SLA deadlines (``SnapshotKeeper``)."""
        waiting = self.alerts.watch.deadlines(self.engine.leads)
        return self.snapshots.write(self.engine.partitions, waiting)

    async def _send_metric(self, topic: str, key: bytes, value: bytes | None) -> None:
        await (await self.metric_topics[topic].send(key=key, value=value))

    def _owns(self, metric: str, labels: dict[str, str]) -> bool:
        return self.reader.owns(KPIS[metric].owner_key(labels))

    async def _alert_to_redis(self, alert: Alert) -> None:
        await self.redis.publish_alert(REDIS_ALERT_CHANNEL, alert.model_dump_json().encode())

    # --- timers ----------------------------------------------------------------------------

    async def _check_alerts(self) -> None:
        async with self.state_lock.reader:
            # Not while the membership is not known to stand either: a worker thawed after
            # its session would alert on leads whose new owner alerts too (bug 19).
            if not self.app.rebalancing and self.ready and self.lease.stands():
                try:
                    await self.alerts.publish_due(self.engine.leads, time.time())
                except NotReady:
                    # A shutdown stopped the producer under this round (a crash of the
                    # worker before): what was not remembered is the next owner's to send.
                    log.info("alert round cut short: the producer has stopped")
                except MembershipLost as lost:
                    # Rescheduled: sent by this worker after its rejoin, if it still owns
                    # the lead, else by its next owner.
                    log.warning("alert round not sent: %s", lost)

    def _lead_cache_stats(self) -> tuple[int, int]:
        return len(self.lead_cache.hot), self.lead_cache.disk_reads

    async def _trim_leads(self) -> None:
        """Keep the lead cache to its size (``state.lead_cache``): under the writer side
        of the state lock, when no batch or alert round holds a lead across an await."""
        if self.lead_cache.over <= 0:
            return
        async with self.state_lock.writer:
            self.lead_cache.trim()

    async def _prune(self) -> None:
        # In slices, and the lead scan outside the state lock: in one go pruning and the
        # scan took 53 + 136 ms at 30,000 leads (in-process), a stall of the loop and of the
        # batches every minute.
        now = time.time()
        busy = Stretches()
        await busy.drain(self.engine.prune_in_steps(now))
        if self.app.rebalancing or not self.ready:
            return
        self.engine.note_backlog(self._input_backlog())
        candidates = await busy.drain(self.engine.eviction_candidates(now))
        customers = await busy.drain(self.engine.customer_candidates(now))
        async with self.state_lock.writer:
            if self.ready:
                await self._evict(now, [c for c in candidates if c is not None])
        await self._forget_customers(now, [c for c in customers if c is not None])

    async def _evict(self, now: float, candidates: list[str]) -> None:
        """Forget leads past retention, in rounds whose rollups are changelogged with the
        leads' tombstones (``state.rollup_log``); a round left unfinished goes first."""
        parts = self.engine.partitions
        if self.rollup_log.unfinished:
            await self.rollup_log.flush(parts)
        for start in range(0, max(len(candidates), 1), LEADS_PER_ROUND):
            gone = self.engine.evict(now, candidates[start : start + LEADS_PER_ROUND])
            self.events.forget(gone)
            forgotten: dict[int, list[str]] = {}
            for lead in gone:
                forgotten.setdefault(lead.partition, []).append(lead.lead_id)
            self.rollup_log.take(parts, forgotten)
            await self.rollup_log.flush(parts)
            if gone:
                log.info("evicted %d leads past retention", len(gone))

    async def _forget_customers(self, now: float, candidates: list[str]) -> None:
        """Forget customers and costs past the longest window, ``last_year``, and compact
        the others (``Engine.forget_customers``), a round at a time under the state lock:
        when ``last_year`` moves, most customers have something to drop (50,000 customers,
        38,119 of them candidates: 1.3 s in all, ~35 ms a round of 1,000, in-process on a
        machine with a load average of 5)."""
        flow = self.events.customers
        if flow is None:
            return
        for start in range(0, len(candidates), LEADS_PER_ROUND):
            async with self.state_lock.writer:
                if not self.ready:
                    return
                gone, compacted = self.engine.forget_customers(
                    now, candidates[start : start + LEADS_PER_ROUND]
                )
                await flow.forget(gone, compacted)
            if gone or compacted:
                log.info("forgot %d customers, compacted %d", len(gone), len(compacted))

    # --- rebalances ------------------------------------------------------------------------

    def active_partitions(self) -> set[int]:
        """The lead topics' partitions assigned to this worker (the internal customers
        topic's are the same numbers; the business topics' are theirs alone)."""
        return self._active(self.lead_topics)

    def _standbys(self) -> set[int]:
        """The partitions this worker holds a standby copy of (the leads table's)."""
        leads = cast(DiskStore, self.leads_table.data).topic
        return {tp.partition for tp in self.app.assignor.assigned_standbys() if tp.topic == leads}

    def _active(self, topics: Iterable[str]) -> set[int]:
        wanted = set(topics)
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in wanted}

    async def _on_revoked(self, app: faust.App, *_: Any, **__: Any) -> None:
        # No batch straddles a reassignment: the one in hand is applied and changelogged
        # before any partition moves or is recovered again (recovery would otherwise read
        # the changelog without it and replace the leads it changed with older states,
        # while its offsets still get committed). Later batches wait for the recovery.
        self._join_requested.set()  # the threads of ``start_ahead`` may start
        async with self.state_lock.writer:
            self.ready = False
            self._rebalances += 1
        # A worker stopping cleanly published its partitions' snapshots before it left:
        # those it was our standby for are likely ours now; fetched while the join waits.
        self.snapshots.fetch_ahead(self._standbys() - self.active_partitions(), self.engine.clock)
        self._merge_view_ahead()

    def _merge_view_ahead(self) -> None:
        """Merge the partials' view of the keys not merged here yet from the copies on
        disk (the standby copies of the partitions a hand-over may bring) while the join
        waits: in the recovery, it took 0.14 s of a SIGTERM hand-over's ~3 s at 100,000
        leads. No refresh runs while the group rebalances: the keys merged stay put."""
        partials = cast(DiskStore, self.partials_table.data)
        held = self.reader.view.merged_keys()
        self.rounds.refresh_ahead(partial(disk_records, partials.db, held))

    async def _on_assigned(self, app: faust.App, *_: Any, **__: Any) -> None:
        # Series of partitions that moved away leave now, before the new owner shows them.
        active = self.active_partitions()
        # So does what this worker holds of a partition it keeps whose changelog another
        # worker wrote meanwhile (this one was out of the group: frozen past its session,
        # bug 19): its aggregates miss those writes. It is recovered as a new partition,
        # from its disk copy, which the catch-up has just brought to the log's end.
        rewritten = self._rewritten(active)
        kept = active - rewritten
        dropped = self.engine.keep_only(kept)
        self.events.keep_only(kept)
        self.rounds.keep_only(kept)
        for store in disk_stores(self.app):
            for p in rewritten:
                store.forget_loaded(p)
        self.partials.inbox.reset()
        self.ready = False
        log.info(
            "assigned lead partitions %s (dropped %d leads; partitions %s written by another "
            "worker meanwhile, recovered anew)",
            sorted(active), len(dropped), sorted(rewritten),
        )  # fmt: skip

    def _rewritten(self, active: set[int]) -> set[int]:
        """The active partitions this worker held aggregates of before the rebalance whose
        changelog the catch-up found records in: written by another worker."""
        return self._written_since() & active & set(self.engine.partitions)

    def _written_since(self) -> set[int]:
        """The partitions whose changelog this rebalance's catch-up read records from (a
        worker's own writes are on its disk copy already: another worker wrote them)."""
        return {p for s in self._derived_stores() for p, n in s.last_read.items() if n}

    async def _on_recovered(self) -> None:
        # Recovery builds ~10 objects a lead in one go: without the collector rescanning
        # them it took 1.3 s instead of 3.7 s at 100,000 leads (in-process, loaded machine).
        new = [p for p in self.active_partitions() if p not in self.engine.partitions]
        rebalances = self._rebalances
        began = time.monotonic()
        published = await self.snapshots.fetch(new)
        if rebalances != self._rebalances:  # another assignment came meanwhile: its
            return  # recovery comes next (Faust never cancels this one)
        fetched = time.monotonic()
        with collections_paused():
            active, built, kept = self._recover(time.time(), published)
        recovered = time.monotonic()
        # Not behind scrapes: a scrape after the recovery waits for this view to be exact.
        await self.rounds.refresh_view(Stretches(first=True))
        self.ready = True
        # The steps' seconds: where a take-over's time goes (docs/performance.md).
        log.info(
            "recovered partitions %s: %d leads derived, partitions %s from snapshots "
            "(snapshots fetched %.2f s, state %.2f s, partials' view %.2f s)",
            sorted(active), built, sorted(kept),
            fetched - began, recovered - fetched, time.monotonic() - recovered,
        )  # fmt: skip

    def _recover(
        self, now: float, published: dict[int, bytes]
    ) -> tuple[set[int], int, dict[int, Snapshot]]:
        """Decode what the tables recovered, then load each new partition's snapshot (the
        data dir's, else ``published``, the broker's) or derive it from its leads, and the
        SLA deadlines: (the active partitions, the leads derived, the snapshots loaded)."""
        found = Recovered()
        found.take(self.engine.leads)  # the rollups first: they are no lead states
        leads_store = cast(DiskStore, self.leads_table.data)
        self.engine.dead_marks |= decode_recovered(self.engine.leads, leads_store.partition_of)
        decode_recovered_customers(self.engine.customers)
        active = self.active_partitions()
        self.engine.keep_only(active)
        self.rollup_log.keep_only(active)
        new = [p for p in active if p not in self.engine.partitions]
        rollups = self.rollup_log.recovered(found, new, self.engine.leads)
        # An eviction round left unfinished changed leads and rollups: rebuilt.
        kept = self._load_snapshots([p for p in new if p not in found.rounds], now, published)
        derived = {p for p in active if p not in self.engine.partitions}
        # The partitions kept through the rebalance keep the deadlines scheduled for their
        # leads, as a snapshot's: reading their leads again took ~0.6 s for 50,000 (a
        # survivor's hand-over at 100,000 leads) to find the few still waiting. Not those
        # whose changelog got records from another worker meanwhile (this one was out of
        # the group; ``_on_assigned`` recovers them anew, this is the watch's own guard):
        # their leads are read.
        watch, staying = self.alerts.watch, active - derived - set(kept)
        written = self._written_since()
        scheduled = watch.deadlines(self.engine.leads)
        watch.schedule_all(
            self.engine.leads.scan(staying & written),
            chain(
                (deadline for p in staying - written for deadline in scheduled.get(p, ())),
                (deadline for snapshot in kept.values() for deadline in snapshot.deadlines),
            ),
        )
        # The derived partitions' leads are scheduled as they are read for their facts:
        # read twice, a rebuild of 100,000 leads took ~0.4 s more (11.8 s, in-process).
        built = self.engine.rebuild(derived, now, rollups, also=watch.schedule)
        return active, built, kept

    def _load_snapshots(
        self, partitions: list[int], now: float, published: dict[int, bytes]
    ) -> dict[int, Snapshot]:
        """The snapshots of the partitions that have one, their aggregates loaded into the
        engine: ``Engine.rebuild`` leaves them as they are."""
        loaded = self.snapshots.load(partitions, self.engine.clock, now, published)
        for p, snapshot in loaded.items():
            self.engine.partitions[p] = snapshot.aggregates
        return loaded

    def _input_backlog(self) -> Iterator[tuple[int, EventKind]]:
        """The lead event topics' partitions with records not committed yet."""
        for topic, partition, lag in self.consumer_lag():
            kind = self.kinds.get(topic)
            if lag > 0 and isinstance(kind, EventKind):
                yield partition, kind

    # --- what the web routes read (``serving.http.Served``) --------------------------------

    def consumer_lag(self) -> Iterator[tuple[str, int, int]]:
        consumer = self.app.consumer
        committed = getattr(consumer, "_committed_offset", {})
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in self.kinds:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # noqa: S112 - not fetched yet: no sample rather than a guess
                continue
            if end is not None:
                yield tp.topic, tp.partition, max(0, end - (committed.get(tp) or 0))

    @property
    def serving(self) -> bool:
        return self.ready and not self.app.rebalancing

    def sink_status(self) -> list[dict[str, object]]:
        return [sink.status for sink in self.sinks]

    async def render_metrics(self, names: Collection[str] | None = None) -> bytes:
        return await self.reader.render_metrics(names)

    def owned_samples(self, now: float) -> list[Sample]:
        return self.reader.owned_samples(now)


def build_topology(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    optional: frozenset[str] = frozenset(),
) -> Topology:
    """The worker's topology; ``optional``: the optional topics present (``check_topics``)."""
    topology = Topology(settings, registry, optional)
    register_routes(topology.app, topology, topology.web_security)
    return topology
