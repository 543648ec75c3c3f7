"""The event batches: applied to the engine, dead letters sent, leads changelogged, then acked."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import faust
from aiorwlock import RWLock
from faust.types import Message, RecordMetadata

from streamproc.contract.outputs import DeadLetter
from streamproc.engine.customer import CustomerState
from streamproc.engine.engine import (
    BatchResult,
    DeadLetterItem,
    DeadMark,
    Engine,
    Forward,
    MessageKind,
    RawMessage,
)
from streamproc.engine.lead import LeadState
from streamproc.runtime.slices import events_seen
from streamproc.serving.alerts import AlertPublisher
from streamproc.serving.prometheus import ProcessorMetrics
from streamproc.state.customer_log import CustomerLog
from streamproc.state.lead_log import LeadLog
from streamproc.worker.acks import ack_applied, current

__all__ = ["CustomerFlow", "EventBatches", "Outbox"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_R = TypeVar("_R")
# A batch whose oldest record waited longer than this was read from a backlog (at 1,000
# events/s live, records wait ~0.05 - 0.5 s for their batch).
KEEPING_UP_SECONDS = 1.0


class CustomerFlow:
    """Where a batch's customer messages go: the business events and won deals to the
    internal customers topic, the changed customers to their changelog."""

    def __init__(
        self, topic: faust.TopicT, customer_log: CustomerLog, business: frozenset[str]
    ) -> None:
        self.topic = topic
        self.log = customer_log
        self.business = business  # their partitions are not the leads': no durable mark
        self.unwritten: dict[str, CustomerState] = {}

    async def send(self, forward: Forward) -> Awaitable[RecordMetadata]:
        """Queue a message for a customer; the caller awaits it before any ack (a crash
        before: the batch is read again, and its customers' duplicates change nothing)."""
        key, value, _ = forward
        return await self.topic.send(key=key.encode(), value=value)

    async def write(self, result: BatchResult) -> None:
        self.unwritten.update((c.customer_id, c) for c in result.changed_customers)
        await self.log.write(list(self.unwritten.values()))
        self.unwritten.clear()

    def keep_only(self, active: set[int]) -> None:
        self.unwritten = {k: c for k, c in self.unwritten.items() if c.partition in active}

    async def forget(self, forgotten: list[CustomerState], compacted: list[CustomerState]) -> None:
        """Changelog what ``Engine.forget_customers`` did: the tombstone of a forgotten
        customer is the last word, not an earlier state still unwritten."""
        for customer in forgotten:
            self.unwritten.pop(customer.customer_id, None)
        await self.log.write(compacted, forgotten)


@dataclass
class Outbox:
    """What applied batches publish before they are acked and would not publish again:
    dead letters and the won deals' messages to their customers.

    The engine has applied a batch by the time these are sent: read again after a failed
    send (a broker error, a write refused by the membership lease), its events are
    duplicates, and the engine dead-letters a message once and reports a deal when it
    changes, so what did not go out waits here and goes with the next batch, before its
    ack. (Business events and rerouted keyless events are forwarded again by the read
    itself: not kept.) What came from a partition that moved away is dropped: its next
    owner reads those events again without this worker's state and publishes them."""

    dead_letters: list[DeadLetterItem] = field(default_factory=list)
    deals: list[Forward] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.dead_letters += result.dead_letters
        self.deals += result.deals

    def keep_only(self, active: set[int]) -> None:
        self.dead_letters = [d for d in self.dead_letters if d.message.partition in active]
        self.deals = [deal for deal in self.deals if deal[2] in active]


class EventBatches:
    """Applies each batch of event messages and acks it once its effects are durable."""

    def __init__(
        self,
        app: faust.App,
        engine: Engine,
        kinds: dict[str, MessageKind],
        lead_log: LeadLog,
        alerts: AlertPublisher,
        metrics: ProcessorMetrics,
        dead_letter_topic: faust.TopicT,
        state_lock: RWLock,
        ready: Callable[[], bool],
        customers: CustomerFlow | None = None,
    ) -> None:
        self.app = app
        self.engine = engine
        self.kinds = kinds
        self.lead_log = lead_log
        self.alerts = alerts
        self.metrics = metrics
        self.dead_letter_topic = dead_letter_topic
        self.state_lock = state_lock
        self.ready = ready
        self.customers = customers
        # Changed by a batch whose changelog write failed: read again, that batch changes
        # nothing (its events are duplicates now), so these go with the next write, and
        # nothing is acked before they are written.
        self.unwritten: dict[str, LeadState] = {}
        self.unwritten_marks: set[DeadMark] = set()
        self.outbox = Outbox()
        # (monotonic time, the oldest record's delay in seconds) of the last batch applied
        self._last_batch = (0.0, 0.0)

    async def handle(self, batch: list[Message]) -> None:
        """Apply a batch of event messages, changelog the leads, then ack the messages."""
        events_seen()  # background work gives the loop way to events from now on
        await ack_applied(self.app, batch, self.apply_locked(batch))

    async def apply_locked(self, batch: list[Message]) -> list[Message]:
        async with self.state_lock.reader:
            return await self.apply(batch)

    async def apply(self, batch: list[Message]) -> list[Message]:
        batch = current(self.app, batch, self.ready())
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
                msg.value or b"",
                int(msg.timestamp * 1000) if msg.timestamp else None,
            )
            for msg in batch
        ]
        now = time.time()
        result = self.engine.process(raw, now)
        self._count(result, raw)
        self.unwritten.update((lead.lead_id, lead) for lead in result.changed)
        self.unwritten_marks.update(result.dead_marks)
        # Dead letters delivered first: only then is their mark (with the leads) made durable;
        # the customers' messages too, before the leads that sent them are.
        self.outbox.add(result)
        await self._send(result)
        written = list(self.unwritten.values())
        marks = self.unwritten_marks
        flow = self.customers
        if flow is not None:
            marks = {mark for mark in marks if mark[0] not in flow.business}
            await flow.write(result)
        await self.lead_log.write(written, marks)
        self.unwritten.clear()
        self.unwritten_marks.clear()
        # ``written``: also the leads of a batch whose write failed (read again, its events
        # are duplicates and change nothing): their deadlines are scheduled now.
        await self.alerts.after_change(written, now)
        for lead in written:
            lead.pack()  # its changelog bytes are current: the items go until the next batch
        return batch

    def keep_only(self, active: set[int]) -> None:
        """What moved away unwritten had no event of it acked: its new owner reads them again."""
        self.unwritten = {k: v for k, v in self.unwritten.items() if v.partition in active}
        self.unwritten_marks = {m for m in self.unwritten_marks if m[1] in active}
        self.outbox.keep_only(active)
        if self.customers is not None:
            self.customers.keep_only(active)

    def forget(self, leads: Iterable[LeadState]) -> None:
        """Evicted leads: their tombstone is the last word, not an earlier state."""
        for lead in leads:
            self.unwritten.pop(lead.lead_id, None)

    async def _send(self, result: BatchResult) -> None:
        """Send the outbox and the batch's forwards and reroutes, and await them; the
        outbox keeps what failed of it for the next batch (and only that: a dead letter
        twice is a duplicate to its reader)."""
        box, flow = self.outbox, self.customers
        if flow is None:
            box.deals = []  # no customers kept: nobody to tell
        dead = [await _queued(self._dead_letter(item)) for item in box.dead_letters]
        deals = [await _queued(flow.send(deal)) for deal in box.deals] if flow else []
        forwarded = [await _queued(flow.send(f)) for f in result.forward] if flow else []
        rerouted = [await _queued(self._reroute(*reroute)) for reroute in result.reroute]
        outcomes = await asyncio.gather(
            *dead, *deals, *forwarded, *rerouted, return_exceptions=True
        )
        in_order = iter(outcomes)
        box.dead_letters = _unsent(box.dead_letters, in_order)
        box.deals = _unsent(box.deals, in_order)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _reroute(
        self, topic: str, key: bytes, value: bytes, partition: int
    ) -> Awaitable[RecordMetadata]:
        """A keyless lead event, published again keyed to its lead's partition; awaited
        before the batch is acked."""
        fut: Awaitable[RecordMetadata] = await self.app.producer.send(
            topic, key, value, partition, None, None
        )
        return fut

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

    def keeping_up(self) -> bool:
        """True unless the last batch, applied within ``KEEPING_UP_SECONDS``, held a record
        older than that: then more are waiting (a backlog, a replay, a catch-up)."""
        at, oldest = self._last_batch
        return oldest <= KEEPING_UP_SECONDS or time.monotonic() - at > KEEPING_UP_SECONDS

    def _count(self, result: BatchResult, raw: list[RawMessage]) -> None:
        for (topic, outcome), n in result.outcomes.items():
            self.metrics.events.labels(topic, outcome).inc(n)
        done = time.time()
        observe = self.metrics.delay.observe
        oldest = 0.0
        for msg in raw:
            if msg.timestamp_ms:
                delay = max(0.0, done - msg.timestamp_ms / 1000)
                observe(delay)
                oldest = max(oldest, delay)
        self._last_batch = (time.monotonic(), oldest)


def _unsent(items: list[_T], outcomes: Iterator[object]) -> list[_T]:
    """The items whose send (the next outcome each, in order) failed."""
    return [item for item in items if isinstance(next(outcomes), BaseException)]


async def _queued(queueing: Awaitable[Awaitable[_R]]) -> Awaitable[_R]:
    """The delivery of a send; a send that failed to be queued, as a failed delivery (so
    that what was queued before it is not sent again)."""
    try:
        return await queueing
    except Exception as exc:
        failed: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
