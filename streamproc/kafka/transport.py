"""A Kafka transport for Faust that never acks a message it did not process.

Faust's stream skips messages fetched under an older consumer generation (or while flow
control is paused during a rebalance) and still acks them, so their offsets can be committed
although nothing applied them: lost events. Here a skipped message is simply not acked; the
consumer seeks back to the committed offset (the log's first offset if there is none) after
the rebalance and reads it again.

That leaves holes in the acked offsets, and Faust's commit only refuses to pass a hole of
two or more messages at the head (``min(acked) - committed > 1``): a single unacked message
right after the committed offset would be committed past. ``_new_offset`` here commits only
a run that starts exactly at the committed offset.

The fetch loop is Faust's with one change: which message it hands to the streams is decided
by ``delivery.DeliveryCursor``, which keeps the seeks in view (Faust's read offset does not:
bug 9 in docs/reliability.md). Seeks are serialised so that a partition sought back by the
loop never overtakes the rebalance's own seek.

Also: commit what was acked before a revoke drops Faust's bookkeeping of it, so that fewer
events are replayed by the partition's next owner (replays are harmless, only wasted work).

Topics given a ``BatchRoute`` (``route_batches``) skip Faust's per-message path (conductor,
channel queue, stream, sensors: most of a worker's time in the profile) and reach their
handler a fetch at a time; the handler acks what it applied. A message of another topic
that waits in that path (its agent's queue is full) holds up the whole fetch loop, the
routed topics too: so every topic a worker reads in bulk is routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from mode import ServiceT

from streamproc.kafka.delivery import DeliveryCursor, Verdict
from streamproc.kafka.lease import fence_sends, membership_lease, renew_on

__all__ = [
    "BatchRoute",
    "ExactConsumer",
    "ExactTransport",
    "IdempotentExactTransport",
    "hold_changelogs_until_resumed",
    "install",
    "route_batches",
]

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0  # after a batch handler failed, before its messages are read again
APART_MAX = 4  # batches of a route handled apart in hand before the fetch loop waits
# Faust hard-codes 1,500 ms. tansu answers a fetch only when that wait is over (it does not
# wake up on new data), so a steady trickle arrived up to 1.5 s late: p50 0.40 s, p99 0.77 s
# at 1,000 events/s on one aiokafka consumer, against p50 0.035 s, p99 0.073 s with 100 ms.
# Kafka answers as soon as data is there either way; 100 ms only adds idle polls.
FETCH_MAX_WAIT_MS = 100


@dataclass(frozen=True)
class BatchRoute:
    """Messages of ``topics`` go to ``handler`` in batches of at most ``size``, in offset
    order per partition. The handler acks (``Consumer.ack``) the messages it applied; the
    others are read again after the next seek. If it raises, the batch is read again.

    ``apart``: the fetch loop does not wait for the handler, it goes on fetching for the
    other routes; this route's batches are handled one after another, in order. For the
    partials: their owner's changelog write of a round's 1 - 4 MB took 100 - 290 ms at
    100,000 leads, and the events fetched meanwhile waited for it (p99 ~400 ms)."""

    topics: frozenset[str]
    handler: Callable[[list[Message]], Awaitable[None]]
    size: int
    apart: bool = False


_routes: weakref.WeakKeyDictionary[Any, tuple[BatchRoute, ...]] = weakref.WeakKeyDictionary()


def route_batches(app: Any, *routes: BatchRoute) -> None:
    """Deliver each route's topics to its handler in batches (the app's consumer must be
    an ``ExactConsumer``: ``install`` makes it so). Replaces the app's earlier routes."""
    _routes[app] = routes


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its start()
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        coordinator = getattr(self._consumer, "_coordinator", None)
        if isinstance(coordinator, GroupCoordinator):
            renew_on(coordinator, membership_lease(self.consumer.app))
            leave_at_generation_zero(coordinator)
            heartbeat_while_assigning(coordinator)
        subscription = getattr(self._consumer, "_subscription", None)
        if isinstance(subscription, SubscriptionState):
            hold_changelogs_until_resumed(subscription, self.consumer._is_changelog_tp)

    def fetch_partitions(self, tps: Iterable[TP], fetch: bool) -> None:
        """From the worker's loop: let aiokafka prefetch ``tps`` or not (on this thread's
        loop, after what the worker asked of it before, such as a seek)."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        # A closed loop (RuntimeError): the consumer has stopped, nothing to fetch.
        with contextlib.suppress(RuntimeError):
            if wanted:
                self.thread_loop.call_soon_threadsafe(self._set_fetching, wanted, fetch)

    def _set_fetching(self, tps: list[TopicPartition], fetch: bool) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()  # a partition revoked meanwhile is left alone
        held = [tp for tp in tps if tp in assigned]
        if fetch:
            consumer.resume(*held)
        else:
            consumer.pause(*held)


def heartbeat_while_assigning(coordinator: GroupCoordinator) -> None:
    """Keep ``coordinator`` heartbeating while the worker handles its new assignment.

    aiokafka starts heartbeating only once the assignment callback has returned; the
    worker's catches the tables' changelogs up there (a new worker at 100,000 leads read
    ~190,000 records in 7 s on a loaded machine): past the 6 s session the group dropped
    it, and the join began again. Kafka's Java client heartbeats from its own thread
    meanwhile; here the heartbeat task starts before the callback (a heartbeat that finds
    a rebalance under way asks for a rejoin, made once the callback returns)."""
    join_complete = coordinator._on_join_complete

    async def heartbeating(*args: Any) -> None:
        coordinator._start_heartbeat_task()
        await join_complete(*args)

    coordinator._on_join_complete = heartbeating


def leave_at_generation_zero(coordinator: GroupCoordinator) -> None:
    """Make ``coordinator`` leave its group on stop also when it joined generation 0 as
    the group's leader.

    aiokafka sends LeaveGroup only for ``generation > 0`` (Kafka's first is 1), but tansu
    hands out 0 to the first members of a group: those never left, and the group waited
    for their session to expire before the next members could join (a restarted worker
    joined twice, 13.1 s at 100,000 leads). LeaveGroup carries no generation: only
    aiokafka's test of "joined" is widened. Not for a follower at generation 0: when every
    member of a first generation left at once, tansu kept one of them as the leader and
    the next worker never synced (2 of 3 runs of two workers stopped together; 0 of 3
    with the leader alone leaving). A single worker, the restart's case, is its leader."""
    leave = coordinator._maybe_leave_group
    perform_assignment = coordinator._perform_assignment
    led: list[int] = []  # the generation this member assigned the partitions of (led)

    async def assigning(response: Any) -> Any:
        led[:] = [response.generation_id]
        return await perform_assignment(response)

    async def leave_any_generation() -> None:
        if coordinator.generation == 0 and led == [0]:
            coordinator.generation = 1  # reset to "none" by the leave itself
        await leave()

    coordinator._perform_assignment = assigning
    coordinator._maybe_leave_group = leave_any_generation


def hold_changelogs_until_resumed(
    subscription: SubscriptionState, is_changelog: Callable[[TopicPartition], bool]
) -> None:
    """Make aiokafka prefetch a table's changelog partition only once the worker resumes it
    (``ExactConsumer.resume_partitions``).

    aiokafka prefetches every assigned partition that is not paused in aiokafka, and Faust
    pauses only in its own bookkeeping: at each assignment aiokafka fetched every changelog
    partition from offset 0 (no committed offset) while the worker seeded its disk copies
    and before Faust's recovery sought them to their marks. Taking over a year of 100,000
    leads that was ~18 MB of fetch responses read and thrown away, 11 - 17 MiB of them
    live at the new worker's peak (memray). And an active partition, which Faust never
    resumes after its recovery, held a fetch of the worker's own changelog writes. The
    pause is set in the same step as the assignment, before the fetcher can see it."""
    assign = subscription.assign_from_subscribed

    def assigning(assignment: set[TopicPartition]) -> None:
        assign(assignment)
        for tp in assignment:
            if is_changelog(tp):
                subscription.pause(tp)

    subscription.assign_from_subscribed = assigning


class ExactConsumer(driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cursor = DeliveryCursor()
        self._seek_lock = asyncio.Lock()
        # per route handled apart: its batches in hand, in order (each waits for the one before)
        self._apart: dict[BatchRoute, deque[asyncio.Future[None]]] = {}

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        super().pause_partitions(tps)
        self._fetch_changelogs(tps, fetch=False)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        super().resume_partitions(tps)
        self._fetch_changelogs(tps, fetch=True)

    def _fetch_changelogs(self, tps: set[TP], fetch: bool) -> None:
        """Faust's pause and resume of changelog partitions, in aiokafka too
        (``hold_changelogs_until_resumed``); the other partitions' are Faust's alone (its
        pause during a rebalance must not drop what aiokafka prefetched of the events)."""
        thread = self._thread
        if isinstance(thread, _ConsumerThread):
            thread.fetch_partitions((tp for tp in tps if self._is_changelog_tp(tp)), fetch)

    def ack(self, message: Message) -> bool:
        if not message.tracked:
            # Skipped by the stream before processing (stale generation, paused flow).
            return False
        return super().ack(message)

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if not acked:
            return None
        if committed is None:
            # Unknown start (never committed, not yet sought): a hole at the head cannot be
            # told from a start; perform_seek fills in the log's first offset.
            return None
        self._fill_gaps(tp, acked)
        acked.sort()
        if acked[0] > committed:
            return None  # the next message to commit is not processed yet
        return super()._new_offset(tp)

    async def perform_seek(self) -> None:
        async with self._seek_lock:
            self._cursor.seeking()
            await super().perform_seek()
            # A partition the group never committed starts at the log's first offset: that
            # is the "committed" offset the head-of-queue guard above compares with, and
            # where it is read again from. Faust seeks only partitions with a committed
            # offset, so the messages of such a partition skipped while the worker was not
            # ready (fetched before a rebalance, or during recovery) would never be read
            # again.
            acking = self.app.topics.acking_topics
            unknown = [
                tp
                for tp in self.assignment()
                if tp.topic in acking and self._committed_offset.get(tp) is None
            ]
            if unknown:
                starts = {
                    tp: offset
                    for tp, offset in (await self.earliest_offsets(*unknown)).items()
                    if self._committed_offset.get(tp) is None
                }
                self._committed_offset.update(starts)
                await self._seek_to(starts)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        self._cursor.seeking()
        offsets = await super().seek_to_committed()
        # aiokafka seeks only the partitions with a committed offset above 0.
        self._cursor.sought({tp: o for tp, o in offsets.items() if o is not None and o > 0})
        return offsets

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        async with self._seek_lock:
            await self._seek_to(partitions)

    async def _seek_to(self, partitions: Mapping[TP, int]) -> None:
        """Seek (the caller holds the seek lock), on the consumer's thread as Faust's
        recovery does."""
        self._cursor.seeking()
        await super().seek_wait(partitions)
        self._cursor.sought(partitions)

    async def _rewind(self, tp: TP, offset: int) -> None:
        """Seek ``tp`` back to its next undelivered offset (``offset`` if none is known)."""
        async with self._seek_lock:
            target = self._cursor.next(tp)
            if tp not in self.assignment():
                return  # revoked: its next owner seeks it
            try:
                await self._seek_to({tp: offset if target is None else target})
            except Exception as exc:  # a rebalance took it meanwhile: it is sought there
                log.info("seeking %s back failed: %r", tp, exc)

    def _fill_gaps(self, tp: TP, acked: list[int]) -> None:
        """Offsets the broker never delivered (compaction, markers) count as done."""
        gaps = self._gap[tp]
        if not gaps:
            return
        top = max(acked)
        filled = [o for gap in sorted(gaps.overlap(0, top)) for o in range(gap.begin, gap.end)]
        if filled:
            acked.extend(filled)
            self._acked_index[tp].update(filled)
            gaps.chop(0, max(filled[-1], top + 1))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        try:
            await self.commit(revoked)
        except Exception as exc:  # a failed early commit only means a longer replay
            log.warning("commit before revoke failed: %r", exc)
        self._cursor.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop, with the cursor deciding what is delivered."""
        stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set  # type: ignore[attr-defined]
        try:
            while not (stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                seeks_at_fetch = self._cursor.seeks  # before the fetch: conservative
                batch = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany can return at once, again and again
                if not self.should_stop:
                    await self._deliver_batch(batch, seeks_at_fetch)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver_batch(self, batch: Any, seeks_at_fetch: int) -> None:
        cursor = self._cursor
        sought_back: set[TP] = set()  # the rest of their records is read again
        held = _HeldByTopic(_routes.get(self.app, ()))
        since_yield = 0
        async for tp, message in batch:
            since_yield += 1
            if since_yield > 100:  # let health checks and timers run
                await asyncio.sleep(0)
                since_yield = 0
            if tp in sought_back:
                continue
            offset = message.offset
            verdict = cursor.judge(tp, offset, seeks_at_fetch)
            if verdict is Verdict.REPEAT:
                continue
            if verdict is Verdict.JUMP:
                log.info("%s: offset %d follows %s: reading it again", tp, offset, cursor.next(tp))
            if verdict is Verdict.STALE or verdict is Verdict.JUMP:
                sought_back |= await self._hand_over_all(held)  # no seek of ours while holding
                sought_back.add(tp)
                await self._rewind(tp, offset)
                continue
            if verdict is Verdict.GAP:
                self._add_real_gap(tp, message.topic, offset)
            route_held = held.get(message.topic)
            if route_held is not None:
                route_held.add(message, cursor.seeks)
                cursor.delivered(tp, offset, cursor.seeks)  # judged as handed over
                if route_held.full:
                    sought_back |= await self._hand_over(route_held)
            elif not await self._deliver(tp, message):
                sought_back |= await self._hand_over_all(held)
                sought_back.add(tp)
                await self._rewind(tp, offset)
        await self._hand_over_all(held)

    async def _hand_over_all(self, held: _HeldByTopic) -> set[TP]:
        """``_hand_over`` for every route, in the order of the routes."""
        sought_back: set[TP] = set()
        for route_held in held.routes:
            sought_back |= await self._hand_over(route_held)
        return sought_back

    async def _hand_over(self, held: _Held) -> set[TP]:
        """Hand the held messages to their route's handler. Returns the partitions sought
        back to be read again (a rebalance under way, or the handler failed)."""
        messages, seeks_at_hold = held.take()
        if not messages:
            return set()
        if self.flow_active:
            # Pending like a message a stream took: a rebalance or a shutdown waits for its
            # ack (Faust's wait_empty). Not a changelog's: no ack would ever clear it.
            route = held.route
            acking = self.app.topics.acks_enabled_for
            acked = {topic for topic in route.topics if acking(topic)}
            pending = (
                messages if acked == route.topics else [m for m in messages if m.topic in acked]
            )
            for message in pending:  # per route, not per message: the events' topics all ack
                self._unacked_messages.add(message)
            if route.apart:
                await self._hand_over_apart(route, messages, seeks_at_hold)
                return set()
            if await self._handled(route, messages):
                return set()
        return await self._seek_back(messages, seeks_at_hold)

    async def _handled(self, route: BatchRoute, messages: list[Message]) -> bool:
        """Run the handler; False if it failed (after a pause before the batch is read
        again). It goes on to the end of the batch when the fetch loop is cancelled (a
        shutdown stops the fetcher first)."""
        handling = asyncio.ensure_future(route.handler(messages))
        try:
            await asyncio.shield(handling)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("batch handler failed, reading the batch again: %r", exc)
            await self.sleep(RETRY_SECONDS)
            return False

    async def _hand_over_apart(
        self, route: BatchRoute, messages: list[Message], seeks_at_hold: int
    ) -> None:
        """Start handling the batch after the route's batches in hand; wait only when
        ``APART_MAX`` are (the handler falls behind: the fetch loop slows down to it)."""
        pending = self._apart.setdefault(route, deque())
        while pending and pending[0].done():
            pending.popleft()
        if len(pending) >= APART_MAX:
            await asyncio.wait([pending[0]])
        before = pending[-1] if pending else None
        handling = self._handle_apart(before, route, messages, seeks_at_hold)
        pending.append(asyncio.ensure_future(handling))

    async def _handle_apart(
        self,
        before: asyncio.Future[None] | None,
        route: BatchRoute,
        messages: list[Message],
        seeks_at_hold: int,
    ) -> None:
        """A batch of a route handled apart, after the one handed over before it. If it
        fails, its partitions are read again from it on: the batches handed over after it
        are still applied, then applied again after it, in order."""
        if before is not None:
            await asyncio.wait([before])
        try:
            if not await self._handled(route, messages):
                await self._seek_back(messages, seeks_at_hold)
        except Exception as exc:
            log.exception("seeking back after a failed batch failed: %r", exc)

    async def _seek_back(self, messages: list[Message], seeks_at_hold: int) -> set[TP]:
        """Seek each partition of ``messages`` back to its first one (unless a seek since
        they were held went back further); returns those partitions."""
        firsts: dict[TP, int] = {}
        for message in messages:
            firsts.setdefault(message.tp, message.offset)
        async with self._seek_lock:
            # A seek since then went to the committed offsets, at or before these messages
            # (they are not acked): they are read again from there.
            if self._cursor.seeks != seeks_at_hold:
                return set(firsts)
            for tp, offset in firsts.items():
                if tp in self.assignment():
                    await self._seek_to({tp: offset})
        return set(firsts)

    async def _deliver(self, tp: TP, message: Message) -> bool:
        """Hand one message to the streams. False if a flow stop (a rebalance) cut the
        delivery off: the message must be read again."""
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        seeks_before = self._cursor.seeks
        delivery = self.callback(message)
        outcome = await self.wait_first(delivery, self.suspend_flow.wait())
        if delivery not in outcome.done:
            return outcome.stopped  # a consumer that stops reads nothing again
        self._cursor.delivered(tp, message.offset, seeks_before)
        return True

    def _add_real_gap(self, tp: TP, topic: str, offset: int) -> None:
        """Offsets before ``offset`` that the log does not hold count as done. Faust's own
        ``_add_gap`` also counts ``offset`` itself, before it is processed."""
        start = self._cursor.next(tp)
        if start is not None and self.app.topics.acks_enabled_for(topic):
            log.info("%s: offsets %d-%d are not in the log", tp, start, offset - 1)
            gaps = self._gap[tp]
            gaps.addi(start, offset)
            gaps.merge_overlaps()


class _Held:
    """Messages of a batch route held for their handler, and the seek count when the first
    was held."""

    def __init__(self, route: BatchRoute) -> None:
        self.route = route
        self._messages: list[Message] = []
        self._seeks = 0

    def add(self, message: Message, seeks: int) -> None:
        if not self._messages:
            self._seeks = seeks
        self._messages.append(message)

    @property
    def full(self) -> bool:
        return len(self._messages) >= self.route.size

    def take(self) -> tuple[list[Message], int]:
        messages, self._messages = self._messages, []
        return messages, self._seeks


class _HeldByTopic:
    """A ``_Held`` per route of a fetch, found by topic."""

    def __init__(self, routes: tuple[BatchRoute, ...]) -> None:
        self.routes = [_Held(route) for route in routes]
        self._by_topic = {topic: held for held in self.routes for topic in held.route.topics}

    def get(self, topic: str) -> _Held | None:
        return self._by_topic.get(topic)


class FencedProducer(driver.Producer):
    """Sends nothing while the worker's group membership is not known to stand
    (``streamproc.kafka.lease``)."""

    def _new_producer(self, transactional_id: str | None = None) -> Any:
        producer = super()._new_producer(transactional_id)
        fence_sends(producer, membership_lease(self.app))
        return producer


class IdempotentProducer(FencedProducer):
    """The broker drops a produce request the producer retried after a lost response (a
    connection cut): no repeated alert or metric message from a retry. Real Kafka only:
    tansu answers InitProducerId with an error."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class ExactTransport(driver.Transport):
    Consumer: ClassVar[type[ExactConsumer]] = ExactConsumer
    Producer: ClassVar[type[FencedProducer]] = FencedProducer


class IdempotentExactTransport(ExactTransport):
    Producer: ClassVar[type[IdempotentProducer]] = IdempotentProducer


def install(*, idempotent_producer: bool = False) -> None:
    """Make ``kafka://`` URLs use this transport (calling it again only re-points them)."""
    chosen = IdempotentExactTransport if idempotent_producer else ExactTransport
    TRANSPORTS.aliases["kafka"] = f"{__name__}:{chosen.__name__}"
    TRANSPORTS.aliases["aiokafka"] = f"{__name__}:{chosen.__name__}"
