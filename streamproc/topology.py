"""The Faust topology: topics, tables, agents and timers, wired to the pure engine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Iterator

import faust
from aiorwlock import RWLock
from faust.exceptions import NotReady
from faust.types import Message, RecordMetadata
from prometheus_client import CollectorRegistry, generate_latest

from streamproc.alerting import AlertPublisher
from streamproc.alerts import AlertWatch
from streamproc.app import create_app
from streamproc.business_hours import SlaClock
from streamproc.changelog import ChangelogWriter
from streamproc.config import Settings
from streamproc.engine import BatchResult, DeadLetterItem, DeadMark, Engine, RawMessage
from streamproc.events import EventKind
from streamproc.facts import FactDeriver
from streamproc.kafka_batch import BatchRecord, send_in_batches
from streamproc.kpis import (
    Sample,
    Summary,
    merged_whole_samples,
    owner_key_of,
    split_samples,
)
from streamproc.lead import LeadState
from streamproc.lead_log import LeadLog, decode_recovered
from streamproc.metrics import LagCollector, ProcessorMetrics, kpi_exposition
from streamproc.outputs import Alert, DeadLetter
from streamproc.partials import (
    FullRounds,
    PartialsInbox,
    PartialsPublisher,
    PartialsView,
    owner_partition,
)
from streamproc.sinks import Sink
from streamproc.sinks.metric_topics import MetricTopicsSink
from streamproc.sinks.redis_snapshot import RedisSnapshotSink
from streamproc.slices import Stretches
from streamproc.topics import topic_names
from streamproc.transport import BatchRoute, route_batches

__all__ = ["Topology", "build_topology"]

log = logging.getLogger(__name__)
PRUNE_SECONDS = 60.0
FULL_PUBLISH_SECONDS = 30.0
_END = object()
PUBLISH_SHARE = 0.25  # at most this share of the event loop goes to publish rounds
# Partials re-sent per second at most, counted as sent (compressed), changed keys oldest
# first (PartialsPublisher): 100 reps and 100,000 leads changed ~7 MB of summaries (as JSON)
# every second, and computing, sending and merging them all took most of a worker's loop.
PARTIALS_BYTES_PER_SECOND = 300_000
REDIS_ALERT_CHANNEL = "streamproc:alerts"


class Topology:
    """Everything one worker runs; ``build_topology`` creates it, ``cli`` starts it."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.names = topic_names(settings)
        self.app = create_app(settings)
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.metrics = ProcessorMetrics.create(self.registry)
        self.registry.register(LagCollector(self.consumer_lag))
        self.kinds = {self.names.inputs[k]: EventKind(k) for k in self.names.inputs}
        self.leads_table = self._table("leads")
        self.partials_table = self._table("partials")
        self.sla_clock = SlaClock(settings.business_hours)
        deriver = FactDeriver(settings, due=self.sla_clock.due)
        self.engine = Engine(settings, self.leads_table.data.data, deriver)  # type: ignore[attr-defined]
        self.publisher = PartialsPublisher(settings.partitions)
        self.view = PartialsView(settings.partitions)
        self.inbox = PartialsInbox(settings.partitions)
        self.events_topic = self.app.topic(
            *self.kinds, key_serializer="raw", value_serializer="raw"
        )
        self.partials_topic = self.app.topic(
            self.names.partials, key_serializer="raw", value_serializer="raw"
        )
        self.dead_letter_topic = self.app.topic(
            self.names.dead_letter, key_serializer="raw", value_serializer="raw"
        )
        self.alerts_topic = self.app.topic(
            self.names.alerts, key_serializer="raw", value_serializer="raw"
        )
        self.metric_topics = {
            name: self.app.topic(name, key_serializer="raw", value_serializer="raw")
            for name in self.names.metrics.values()
        }
        self.lead_log = LeadLog(self.leads_table)
        self.partials_log = ChangelogWriter(self.partials_table)
        self.alerts = AlertPublisher(
            AlertWatch(settings, self.sla_clock),
            self.alerts_topic,
            self.lead_log,
            self.metrics.alerts,
        )
        self.redis = RedisSnapshotSink(settings, self._owns, self.metrics.redis_up)
        self.sinks: list[Sink] = [MetricTopicsSink(settings, self._send_metric), self.redis]
        self.alerts.hooks.append(self._alert_to_redis)
        self.ready = False
        # Changed by a batch whose changelog write failed: read again, that batch changes
        # nothing (its events are duplicates now), so these go with the next write, and
        # nothing is acked before they are written.
        self._unwritten: dict[str, LeadState] = {}
        self._unwritten_marks: set[DeadMark] = set()
        # Held by whatever changes lead state and changelogs it, until the changelog has it:
        # shared by the batches and the SLA timer, whose changelog writes the writer keeps
        # in order (a batch waited up to ~120 ms for an alert round's two round trips);
        # exclusive for eviction and for a rebalance (``_on_revoked``), which wait for all.
        self._state_lock = RWLock(fast=True)
        self.full_rounds = FullRounds(FULL_PUBLISH_SECONDS)
        self._last_publish = time.monotonic()
        self._next_publish = 0.0  # monotonic: no publish round before
        self._full_publish_due = False
        self._wire()

    def _table(self, name: str) -> faust.Table:
        # Raw bytes on the changelog; the engine keeps decoded objects in the same store.
        return self.app.Table(
            name, key_type=bytes, value_type=bytes, partitions=self.settings.partitions
        )

    # --- wiring ----------------------------------------------------------------------------

    def _wire(self) -> None:
        app, s = self.app, self.settings
        app.agent(self.events_topic, name="kpi-events", concurrency=1)(self._consume_events)
        route_batches(
            app,
            BatchRoute(frozenset(self.kinds), self.handle_batch, s.batch_size),
            BatchRoute(
                frozenset({self.names.partials}), self.handle_partials, s.batch_size, apart=True
            ),
        )
        app.agent(self.partials_topic, name="kpi-partials", concurrency=1)(self._consume_partials)
        app.timer(s.publish_interval_seconds, name="publish-partials")(self._publish_partials)
        app.timer(PRUNE_SECONDS, name="prune-windows")(self._prune)
        app.timer(s.alert_check_interval_seconds, name="sla-watch")(self._check_alerts)
        self.leads_table.on_recover(self._on_recovered)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.task(self._start_sinks)
        app.on_before_shutdown.connect(self._stop_sinks)

    async def _consume_events(self, stream: faust.StreamT) -> None:
        # Only if the consumer is not ours: ExactConsumer hands the event topics straight
        # to handle_batch (route_batches in _wire), without Faust's per-event path.
        s = self.settings
        async for batch in stream.take_events(s.batch_size, within=s.batch_seconds):
            await self.handle_batch([event.message for event in batch])

    async def handle_batch(self, batch: list[Message]) -> None:
        """Apply a batch of event messages, changelog the leads, then ack the messages."""
        await self._ack_applied(batch, self._apply_locked(batch))

    async def _apply_locked(self, batch: list[Message]) -> list[Message]:
        async with self._state_lock.reader:
            return await self._apply(batch)

    async def _ack_applied(self, batch: list[Message], applying: Awaitable[list[Message]]) -> None:
        """Ack the messages ``applying`` returns once it is done; none if it fails or is
        cancelled (a shutdown cancels changelog writes in flight): the batch must be read
        again (``take_events`` would ack it all the same)."""
        try:
            applied = await applying
        except BaseException:
            self._leave_unacked(batch)
            raise
        ack = self.app.consumer.ack
        for message in applied:
            message.tracked = True
            ack(message)

    async def _apply(self, batch: list[Message]) -> list[Message]:
        batch = self._current(batch)
        if not batch:
            return batch
        kinds = self.kinds
        raw = [
            RawMessage(
                kinds[msg.topic],
                msg.topic,
                msg.partition,
                msg.offset,
                msg.key,
                msg.value,
                msg.timestamp and int(msg.timestamp * 1000),
            )
            for msg in batch
        ]
        now = time.time()
        result = self.engine.process(raw, now)
        self._count(result, raw)
        self._unwritten.update((lead.lead_id, lead) for lead in result.changed)
        self._unwritten_marks.update(result.dead_marks)
        # Dead letters delivered first: only then is their mark (with the leads) made durable.
        dead = [await self._dead_letter(item) for item in result.dead_letters]
        await asyncio.gather(*dead)
        written = list(self._unwritten.values())
        await self.lead_log.write(written, self._unwritten_marks)
        self._unwritten.clear()
        self._unwritten_marks.clear()
        await self.alerts.after_change(result.changed, now)
        for lead in written:
            lead.pack()  # its changelog bytes are current: the items go until the next batch
        return batch

    def _current(self, batch: list[Message]) -> list[Message]:
        """Events this worker may apply now; the others are left unacked, to be read again.

        ``take_events`` can yield events fetched before a rebalance after the reassignment
        has already dropped their partition's leads (or while its recovery runs): applied
        then, they would start a lead afresh and changelog a state older than the truth.
        """
        app = self.app
        generation = app.consumer_generation_id
        active = app.assignor.assigned_actives() if self.ready else set()
        current = []
        for message in batch:
            if message.generation_id == generation and message.tp in active:
                current.append(message)
            else:
                self._leave_unacked([message])
        return current

    def _leave_unacked(self, messages: Iterable[Message]) -> None:
        """Untracked, take_events' ack becomes a no-op (see transport.ExactConsumer): the
        offsets are not committed and the events are read again after the next seek."""
        unacked = self.app.consumer.unacked
        for message in messages:
            message.tracked = False
            unacked.discard(message)

    async def _dead_letter(self, item: DeadLetterItem) -> Awaitable[RecordMetadata]:
        msg = item.message
        letter = DeadLetter.from_raw(
            reason=item.reason,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            timestamp_ms=msg.timestamp_ms,
            value=msg.value,
        )
        log.warning(
            "dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, item.reason
        )
        return await self.dead_letter_topic.send(
            key=msg.key, value=letter.model_dump_json().encode()
        )

    def _count(self, result: BatchResult, raw: list[RawMessage]) -> None:
        for (topic, outcome), n in result.outcomes.items():
            self.metrics.events.labels(topic, outcome).inc(n)
        done = time.time()
        observe = self.metrics.delay.observe
        for msg in raw:
            if msg.timestamp_ms:
                observe(max(0.0, done - msg.timestamp_ms / 1000))

    async def _consume_partials(self, stream: faust.StreamT) -> None:
        # Only if the consumer is not ours (see _consume_events): handle_partials.
        s = self.settings
        async for batch in stream.take_events(s.batch_size, within=s.batch_seconds):
            await self._apply_partials([event.message for event in batch])

    async def handle_partials(self, batch: list[Message]) -> None:
        """Apply a batch of partials messages, changelog the table, then ack them. Routed
        in batches like the events (through Faust's per-message path, a full round's
        thousands of partials held up the fetch loop for up to ~1 s), and handled apart
        from the fetch loop (``BatchRoute.apart``): their changelog write does not hold up
        the events fetched meanwhile."""
        await self._ack_applied(batch, self._apply_partials(self._current(batch)))

    async def _apply_partials(self, batch: list[Message]) -> list[Message]:
        # Stored and changelogged by us rather than by ``table[key] = value``: Faust would
        # end the changelog with multi-record batches (see streamproc.changelog).
        store = self.partials_table.data.data  # type: ignore[attr-defined]
        writes = self.inbox.apply(
            store, ((msg.key, msg.value or b"", msg.partition) for msg in batch)
        )
        try:
            await self.partials_log.write(
                (key, value, partition) for (key, partition), value in writes.items()
            )
        except BaseException:
            self.inbox.unwritten(store, writes)  # the batch is read again
            raise
        return batch

    # --- timers ----------------------------------------------------------------------------

    async def _publish_partials(self) -> None:
        if self.app.rebalancing or not self.ready:
            return
        if time.monotonic() < self._next_publish:
            return  # the last round was long: its share of the loop is used up (see below)
        started = time.monotonic()
        now = time.time()
        # Re-send everything now and then: a new owner whose recovery missed the tail of the
        # partials changelog is healed within this period.
        full = self.full_rounds.due(list(self.engine.partitions), now, self._full_publish_due)
        # Until this round has run to its end, the changes it took are not published.
        self._full_publish_due = True
        busy = Stretches()
        # The budget of the time since the last round (a long round delays the next one).
        since, self._last_publish = started - self._last_publish, started
        budget = int(PARTIALS_BYTES_PER_SECOND * min(since, FULL_PUBLISH_SECONDS))
        messages = self.publisher.round(
            self.engine.partitions, self.engine.clock, now, full, budget
        )
        out: list[BatchRecord] = []
        while True:
            with busy:
                message = next(messages, _END)
            if message is _END:
                break
            if message is not None:
                out.append(message)  # type: ignore[arg-type]
            await busy.pause()
            if self.app.rebalancing or not self.ready:
                return
        for sent in await send_in_batches(self.app, self.names.partials, out):
            sent.add_done_callback(_log_failed_send)
        self._full_publish_due = False
        # The owner side, sliced too: decoding and merging what changed, then the samples.
        table = self.partials_table.data.data  # type: ignore[attr-defined]
        await busy.drain(self.view.refresh(table, self._active([self.names.partials])))
        owned = await busy.drain(self._owned_samples(now))
        for sink in self.sinks:
            await sink.publish(owned, now)  # returns at once: sinks work in the background
        # Under a backlog a round may take long; the next one waits until this one's work is
        # at most PUBLISH_SHARE of the time since it started, so that events and the SLA
        # timer get the rest.
        self._next_publish = started + busy.total / PUBLISH_SHARE

    # --- sinks -----------------------------------------------------------------------------

    async def _start_sinks(self) -> None:
        for sink in self.sinks:
            await sink.start()

    async def _stop_sinks(self, app: faust.App | None = None, **_: object) -> None:
        for sink in self.sinks:
            await sink.stop()

    async def _send_metric(self, topic: str, key: bytes, value: bytes) -> None:
        await (await self.metric_topics[topic].send(key=key, value=value))

    def _owns(self, labels: dict[str, str]) -> bool:
        key = owner_key_of(labels)
        return owner_partition(key, self.settings.partitions) in self._active([self.names.partials])

    async def _alert_to_redis(self, alert: Alert) -> None:
        await self.redis.publish_alert(REDIS_ALERT_CHANNEL, alert.model_dump_json().encode())

    async def _check_alerts(self) -> None:
        async with self._state_lock.reader:
            if not self.app.rebalancing and self.ready:
                try:
                    await self.alerts.publish_due(self.engine.leads, time.time())
                except NotReady:
                    # A shutdown stopped the producer under this round (a crash of the
                    # worker before): what was not remembered is the next owner's to send.
                    log.info("alert round cut short: the producer has stopped")

    async def _prune(self) -> None:
        # In slices, and the lead scan outside the state lock: in one go pruning and the
        # scan took 53 + 136 ms at 30,000 leads (in-process), a stall of the loop and of the
        # batches every minute.
        now = time.time()
        busy = Stretches()
        await busy.drain(self.engine.prune_in_steps(now))
        if self.app.rebalancing or not self.ready:
            return
        candidates = await busy.drain(self.engine.eviction_candidates(now))
        async with self._state_lock.writer:
            gone = self.engine.evict(now, candidates) if self.ready else []
            if gone:
                for lead in gone:  # its tombstone is the last word, not an earlier state
                    self._unwritten.pop(lead.lead_id, None)
                await self.lead_log.forget(gone)
                log.info("evicted %d leads past retention", len(gone))

    # --- rebalances ------------------------------------------------------------------------

    def active_partitions(self) -> set[int]:
        """The input partitions assigned to this worker."""
        return self._active(self.kinds)

    def _active(self, topics: Iterable[str]) -> set[int]:
        wanted = set(topics)
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in wanted}

    async def _on_revoked(self, app: faust.App, revoked: object = None, **_: object) -> None:
        # No batch straddles a reassignment: the one in hand is applied and changelogged
        # before any partition moves or is recovered again (recovery would otherwise read
        # the changelog without it and replace the leads it changed with older states,
        # while its offsets still get committed). Later batches wait for the recovery.
        async with self._state_lock.writer:
            self.ready = False

    async def _on_assigned(self, app: faust.App, assigned: object = None, **_: object) -> None:
        # Series of partitions that moved away leave now, before the new owner shows them.
        active = self._active(self.kinds)
        dropped = self.engine.keep_only(active)
        # What moved away unwritten had no event of it acked: its new owner reads them again.
        self._unwritten = {k: v for k, v in self._unwritten.items() if v.partition in active}
        self._unwritten_marks = {m for m in self._unwritten_marks if m[1] in active}
        self.publisher.keep_only(active)
        self.inbox.reset()
        self.ready = False
        log.info("assigned lead partitions %s (dropped %d leads)", sorted(active), len(dropped))

    async def _on_recovered(self) -> None:
        self.engine.dead_marks |= decode_recovered(self.engine.leads)
        active = self._active(self.kinds)
        self.engine.keep_only(active)
        built = self.engine.rebuild(active, time.time())
        self.alerts.watch.schedule_all(self.engine.leads.values())
        self.ready = True
        log.info("recovered partitions %s: %d leads derived", sorted(active), built)

    # --- reading ---------------------------------------------------------------------------

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

    def owned_summaries(self) -> dict[str, Summary]:
        """Per owner key this worker owns, its partial summaries merged, as of the last
        publish round's refresh (rounds come every second, further apart under load)."""
        return self.view.current(self._active([self.names.partials]))

    def owned_samples(self, now: float) -> list[Sample]:
        """Every series this worker owns, whole (counts too): for /kpis, topics and Redis."""
        return list(self._owned_samples(now))

    def _owned_samples(self, now: float) -> Iterator[Sample]:
        return merged_whole_samples(
            self.owned_summaries(),
            self.settings,
            self.engine.clock,
            now,
            self._owned_target_reps(),
            with_counts=True,
        )

    def _owned_target_reps(self) -> list[str]:
        owned = self._active([self.names.partials])
        partitions = self.settings.partitions
        return [
            rep
            for rep in self.settings.activity_targets
            if owner_partition(f"rep:{rep}", partitions) in owned
        ]

    async def render_metrics(self) -> bytes:
        """The /metrics body, computed and formatted in slices that let events run in
        between: in one go, a scrape held the loop ~1 s at 100,000 leads, and every event
        that came meanwhile waited."""
        busy = Stretches()
        try:
            samples = await busy.drain(self.samples(time.time()))
        except RuntimeError:  # a rebalance changed the state between slices: in one go
            samples = list(self.samples(time.time()))
        with busy:
            own = generate_latest(self.registry)
        parts = await busy.drain(kpi_exposition(samples))
        return own + b"".join(part for part in parts if part is not None)

    def samples(self, now: float) -> Iterator[Sample]:
        engine = self.engine
        yield from split_samples(
            engine.partitions.values(), engine.clock, now, self.settings.label_cap
        )
        yield from merged_whole_samples(
            self.owned_summaries(), self.settings, engine.clock, now, self._owned_target_reps()
        )


def _log_failed_send(sent: asyncio.Future[object]) -> None:
    # A lost partial is re-sent by the next full round (FULL_PUBLISH_SECONDS).
    if not sent.cancelled() and sent.exception() is not None:
        log.warning("publishing partials failed: %r", sent.exception())


def build_topology(settings: Settings, registry: CollectorRegistry | None = None) -> Topology:
    topology = Topology(settings, registry)
    from streamproc.web import register_routes

    register_routes(topology)
    return topology
