"""The KPI engine: a batch of raw messages in, lead states and aggregates updated in memory.

No Faust here: the topology feeds it batches and writes back the leads it changed. Per
batch, each touched lead is derived once (old facts before, new facts after) and only the
difference reaches the aggregates, so the cost per event stays small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from sys import intern
from typing import Any, Literal, NamedTuple

import orjson

from streamproc.config import Settings
from streamproc.contract.events import (
    BusinessKind,
    ContactAttempted,
    CostRecorded,
    EmailOpened,
    EventKind,
    EventParser,
    LeadCreated,
)
from streamproc.contract.partitioning import key_partition
from streamproc.engine.aggregates import PartitionAggregates, Rollup, fact_diff
from streamproc.engine.customer import (
    CustomerFacts,
    CustomerState,
    Deal,
    cost_key,
    deal_of,
    event_row,
)
from streamproc.engine.facts import EVERY_GROUP, Fact, FactDeriver
from streamproc.engine.lead import Attempt, Created, LeadState, Open, StageMove
from streamproc.engine.lead_store import LeadStore, MemoryLeads
from streamproc.engine.windows import RETENTION_SECONDS, WindowClock
from streamproc.exceptions import InvalidEvent

SCAN_CHUNK = 2000  # leads scanned for eviction between two chances for the event loop
# A customer is forgotten only once unchanged for this long (wall time): a replay of
# history may still be delivering what came before its churn (a won deal of another lead).
CUSTOMER_IDLE_SECONDS = RETENTION_SECONDS
DeadMark = tuple[str, int, int]  # (source topic, partition, offset) of a dead-lettered message

__all__ = [
    "CUSTOMERS",
    "BatchResult",
    "DeadLetterItem",
    "DeadMark",
    "Engine",
    "MessageKind",
    "RawMessage",
    "Reroute",
]

CUSTOMERS: Literal["customers"] = "customers"  # the kind of the internal customers topic
# (customer key, message, the partition it came from) for the internal customers topic
Forward = tuple[str, bytes, int]
Reroute = tuple[str, bytes, bytes, int]  # (topic, key, value, partition)


MessageKind = EventKind | BusinessKind | Literal["customers"]


class RawMessage(NamedTuple):
    kind: MessageKind
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None


class DeadLetterItem(NamedTuple):
    message: RawMessage
    reason: str


@dataclass(slots=True)
class BatchResult:
    changed: list[LeadState] = field(default_factory=list)
    dead_letters: list[DeadLetterItem] = field(default_factory=list)
    # Messages dead-lettered in this batch (made durable with it)
    dead_marks: list[DeadMark] = field(default_factory=list)
    # (topic, outcome) -> count
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    # For the internal customers topic: business events (forwarded again when their batch
    # is read again) and the won deals of changed leads (not: the lead has them by then)
    forward: list[Forward] = field(default_factory=list)
    deals: list[Forward] = field(default_factory=list)
    changed_customers: list[CustomerState] = field(default_factory=list)
    # Lead events that came without a key, away from their lead's partition: to publish
    # again, keyed, to it (``contract.partitioning``); counted where they are processed.
    reroute: list[Reroute] = field(default_factory=list)

    def count(self, topic: str, outcome: str) -> None:
        key = (topic, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


def to_item(event: object) -> Created | Attempt | StageMove | Open:
    """The compact, order-free record the lead state keeps of a validated event.

    Labels (rep, channel, source, team, stage, reason) are interned: a few hundred distinct
    values repeated over millions of kept events would otherwise each be a string of their own.
    """
    ts = event.ts  # type: ignore[attr-defined]
    eid = event.event_id  # type: ignore[attr-defined]
    if isinstance(event, ContactAttempted):
        return Attempt(
            ts, eid, intern(event.rep_id), intern(event.channel), event.connected, event.message_id
        )
    if isinstance(event, EmailOpened):
        return Open(ts, eid, event.message_id, event.clicked)
    if isinstance(event, LeadCreated):
        return Created(
            ts,
            eid,
            intern(event.rep_id),
            intern(event.source),
            intern(event.team_id),
            event.existing_customer,
            event.estimated_value,
            event.customer_id,
            intern(event.segment),
        )
    reason = event.lost_reason  # type: ignore[attr-defined]
    lines = event.products  # type: ignore[attr-defined]
    products = None if lines is None else tuple(sorted({intern(p.product_id) for p in lines}))
    return StageMove(
        ts,
        eid,
        intern(event.rep_id),  # type: ignore[attr-defined]
        intern(event.to_stage),  # type: ignore[attr-defined]
        event.deal_value,  # type: ignore[attr-defined]
        event.win_probability,  # type: ignore[attr-defined]
        None if reason is None else intern(reason),
        products,
    )


def _take_facts(
    deriver: FactDeriver,
    lead: LeadState,
    groups: int,
    before: dict[str, tuple[int, list[Fact]]],
) -> None:
    """Keep the lead's facts of the ``groups`` not yet kept in this batch, as they are
    before the event that changes them (the earlier events of the batch did not)."""
    kept, facts = before.get(lead.lead_id, (0, []))
    new = groups & ~kept
    if new:
        before[lead.lead_id] = (kept | new, facts + deriver.facts(lead, new))


class Engine:
    """Applies batches to the lead store and keeps one aggregate set per partition."""

    def __init__(
        self,
        settings: Settings,
        leads: LeadStore | dict[str, LeadState],
        deriver: FactDeriver | None = None,
        customers: MutableMapping[str, CustomerState] | None = None,
    ) -> None:
        self.settings = settings
        self.leads = leads if isinstance(leads, LeadStore) else MemoryLeads(leads)
        self.customers: MutableMapping[str, CustomerState] = {} if customers is None else customers
        self.parser = EventParser(settings)
        self.deriver = deriver or FactDeriver(settings)
        self.clock = WindowClock(settings.zone, settings.fiscal_year_start_month)
        self.customer_facts = CustomerFacts(self.clock)
        self.partitions: dict[int, PartitionAggregates] = {}
        # Messages already dead-lettered (durable: see LeadLog), one mark per message: after
        # a seek back, messages can be applied out of offset order, so a per-partition
        # "highest offset" would pass over one not dead-lettered yet.
        self.dead_marks: set[DeadMark] = set()
        # Per input topic of each partition: the latest event time read and the wall time of
        # its last message. A backfill reads its four topics at different speeds: a lead is
        # not forgotten while one of its partition's topics is behind its last event (what is
        # still to come may be part of its life, e.g. the lead-created carrying its source).
        self.reached: dict[tuple[int, EventKind], tuple[float, float]] = {}
        self.reading_since: dict[int, float] = {}  # partition -> wall time of its first event
        self.reading_any_since = -math.inf  # wall time of the first event on any partition
        # Input topic partitions the consumer says have a backlog (``note_backlog``): never
        # idle, however long since their last message was applied.
        self.backlog: frozenset[tuple[int, EventKind]] = frozenset()

    # --- batches -------------------------------------------------------------------------

    def process(self, batch: Iterable[RawMessage], now: float) -> BatchResult:
        result = BatchResult()
        # re-derived lead -> its groups re-derived and their facts before this batch
        before: dict[str, tuple[int, list[Fact]]] = {}
        changed: dict[str, LeadState] = {}
        late_before = self.clock.period_watermark(now)  # the start of last_year
        deriver = self.deriver
        deals: dict[str, tuple[str, Deal] | None] = {}  # re-derived lead -> deal before
        customers = _CustomerBatch(self, now)
        adds: dict[int, list[Fact]] = {}  # partition -> the batch's facts to add
        for msg in batch:
            kind = msg.kind
            if kind == CUSTOMERS:
                customers.apply(msg, result)
                continue
            if isinstance(kind, BusinessKind):
                self._forward(msg, kind, now, result)
                continue
            try:
                event = self.parser.parse(kind, msg.key, msg.value, now)
            except InvalidEvent as exc:
                result.count(msg.topic, "invalid")
                self._dead_letter(msg, exc.reason, result)
                continue
            lead_id = event.lead_id
            if msg.key is None and self._reroute(msg, lead_id, result):
                continue
            self._mark_read(msg.partition, kind, event.ts, now)
            lead = self.leads.get(lead_id)
            if lead is None:
                lead = self.leads[lead_id] = LeadState(lead_id, msg.partition, first_seen=now)
                before[lead_id] = (EVERY_GROUP, [])
            elif lead.has(event.event_id):
                result.count(msg.topic, "duplicate")
                if lead_id not in changed:
                    lead.pack()  # unpacked by ``has`` only
                continue
            item = to_item(event)
            groups = deriver.affects(lead, item)
            if groups:
                _take_facts(deriver, lead, groups, before)
            if lead_id not in deals and isinstance(item, (Created, StageMove)):
                deals[lead_id] = self._won_deal(lead)
            lead.append(item)  # new: ``has`` said so
            adds.setdefault(lead.partition, []).extend(deriver.event_facts(item))
            changed[lead_id] = lead
            result.count(msg.topic, "late" if event.ts < late_before else "processed")
        self._apply_changes(before, changed, adds, now)
        for lead_id, old_deal in deals.items():
            self._report_deal(changed[lead_id], old_deal, result)
        customers.finish(result)
        result.changed.extend(changed.values())
        return result

    def _apply_changes(
        self,
        before: dict[str, tuple[int, list[Fact]]],
        changed: dict[str, LeadState],
        adds: dict[int, list[Fact]],
        now: float,
    ) -> None:
        """Apply the batch to the aggregates: the events' own facts (``adds``) and what the
        re-derived leads retract and add, in one call per partition and sign. Retracting
        first is safe: a lead's old facts are what it holds in the aggregates, and the
        sums are the same in any order."""
        retracts: dict[int, list[Fact]] = {}
        deriver = self.deriver
        for lead_id, (groups, old) in before.items():
            lead = changed[lead_id]
            retract, add = fact_diff(old, deriver.facts(lead, groups))
            retracts.setdefault(lead.partition, []).extend(retract)
            adds.setdefault(lead.partition, []).extend(add)
        for partition, facts in retracts.items():
            self.aggregates(partition, now).apply(facts, -1)
        for partition, facts in adds.items():
            self.aggregates(partition, now).apply(facts, 1)

    # --- customers -----------------------------------------------------------------------

    def _won_deal(self, lead: LeadState) -> tuple[str, Deal] | None:
        """The lead's customer and deal if it has a won move (most leads have none: a scan
        of its stages, not the deal, which cost ~20 % of the engine's throughput)."""
        won = self.settings.won_stage
        if not any(move.to_stage == won for move in lead.stages):
            return None
        return deal_of(lead, won, self.deriver.deal_value(lead))

    def _report_deal(
        self, lead: LeadState, old: tuple[str, Deal] | None, result: BatchResult
    ) -> None:
        """Send the lead's deal to its customer when it changed and was or is won; a lead
        that moved to another customer (its lead-created came late) leaves its old one."""
        now_won = self._won_deal(lead)
        if now_won is None and old is None:
            return
        customer, deal = now_won or deal_of(lead, self.settings.won_stage, 0.0)
        was_won = old is not None
        if old is not None and old[0] == customer and old[1][2:] == deal[2:]:
            return  # won, value, segment, rep and source as before
        partition = lead.partition
        result.deals.append((customer, orjson.dumps({"deal": [customer, *deal]}), partition))
        if old is not None and was_won and old[0] != customer:
            gone = deal._replace(won=None, value=0.0)
            result.deals.append((old[0], orjson.dumps({"deal": [old[0], *gone]}), partition))

    def _reroute(self, msg: RawMessage, lead_id: str, result: BatchResult) -> bool:
        """Whether a keyless lead event belongs to another partition: then it goes there,
        keyed (a crash before the ack sends it again: a duplicate there, changing nothing)."""
        key = lead_id.encode()
        settings = self.settings
        partition = key_partition(key, settings.partitions, settings.keyless_partitioner)
        if partition == msg.partition:
            return False
        result.reroute.append((msg.topic, key, msg.value, partition))
        return True

    def _forward(
        self, msg: RawMessage, kind: BusinessKind, now: float, result: BatchResult
    ) -> None:
        """A business event: validated here, applied by the owner of its customer."""
        try:
            event = self.parser.parse(kind, msg.key, msg.value, now)
        except InvalidEvent as exc:
            result.count(msg.topic, "invalid")
            self._dead_letter(msg, exc.reason, result)
            return
        key = cost_key(event) if isinstance(event, CostRecorded) else event.customer_id
        # Its outcome (processed, duplicate, late) is counted where its customer is kept:
        # only there is a repeat found. The topic goes along for the outcome's label.
        row = {"event": [key, event.event_id, event_row(event)], "topic": msg.topic}
        result.forward.append((key, orjson.dumps(row), msg.partition))

    def _dead_letter(self, msg: RawMessage, reason: str, result: BatchResult) -> None:
        """Once per message: a replay after a crash does not dead-letter it again."""
        mark = (msg.topic, msg.partition, msg.offset)
        if mark in self.dead_marks:
            return
        self.dead_marks.add(mark)
        result.dead_marks.append(mark)
        result.dead_letters.append(DeadLetterItem(msg, reason))

    # --- partitions ----------------------------------------------------------------------

    def aggregates(self, partition: int, now: float) -> PartitionAggregates:
        part = self.partitions.get(partition)
        if part is None:
            part = self.partitions[partition] = PartitionAggregates(self.clock, now)
        return part

    def rebuild(
        self,
        partitions: Iterable[int],
        now: float,
        rollups: Mapping[int, Iterable[Rollup]] | None = None,
        also: Callable[[LeadState], None] | None = None,
    ) -> int:
        """Derive the aggregates of newly owned partitions from their recovered leads and
        customers, and restore what their forgotten leads left in the periods
        (``rollups``). ``also``: called with each lead derived while it is read (the SLA
        watch's ``schedule``: a lead read once, not twice)."""
        wanted = {p for p in partitions if p not in self.partitions}
        built = self._rebuild_leads(wanted, now, rollups or {}, also)
        for customer in self.customers.values():
            if customer.partition in wanted:
                facts = self.customer_facts.facts(customer)
                self.aggregates(customer.partition, now).apply(facts, 1)
        return built

    def _rebuild_leads(
        self,
        wanted: set[int],
        now: float,
        rollups: Mapping[int, Iterable[Rollup]],
        also: Callable[[LeadState], None] | None,
    ) -> int:
        if not wanted:
            return 0
        for p in wanted:
            for rollup in rollups.get(p, ()):
                self.aggregates(p, now).restore(rollup)
        built = 0
        for lead in self.leads.scan(wanted):
            with lead.reading():
                facts = self.deriver.all_facts(lead)
                if also is not None:
                    also(lead)
            self.aggregates(lead.partition, now).apply(facts, 1)
            built += 1
        for p in wanted:
            self.aggregates(p, now)
        return built

    def keep_only(self, partitions: Iterable[int]) -> list[str]:
        """Forget partitions this worker no longer owns; returns the lead ids dropped."""
        keep = set(partitions)
        for p in [p for p in self.partitions if p not in keep]:
            del self.partitions[p]
        self.dead_marks = {mark for mark in self.dead_marks if mark[1] in keep}
        gone = self.leads.keep_only(keep)
        moved = [key for key, c in self.customers.items() if c.partition not in keep]
        for key in moved:
            del self.customers[key]
        return gone

    def prune(self, now: float) -> None:
        for _ in self.prune_in_steps(now):
            pass

    def prune_in_steps(self, now: float) -> Iterator[None]:
        """Prune the partitions' windows one partition per step (between steps the caller
        may let the event loop run)."""
        for part in list(self.partitions.values()):
            part.prune(now)
            yield None

    def eviction_candidates(self, now: float) -> Iterator[str | None]:
        """Ids of the leads whose events are all past retention (``evict`` decides), with a
        None after every ``SCAN_CHUNK`` leads scanned: there the caller may let the event
        loop run (a scan took 136 ms at 30,000 leads)."""
        cutoff = now - RETENTION_SECONDS
        for i, (lead_id, last_ts) in enumerate(self.leads.activity(), 1):
            if last_ts < cutoff:
                yield lead_id
            if i % SCAN_CHUNK == 0:
                yield None

    def evict(self, now: float, candidates: Iterable[str | None] | None = None) -> list[LeadState]:
        """Forget leads that can no longer change a KPI: every event past retention, no live
        fact (not waiting, no open deal) and nothing of its life still to be read (see
        ``_more_may_come``); or silent for the open-lead retention, on the wall clock and
        in what was read (stale: it leaves the live gauges). Returns them, for the changelog.
        ``candidates``: the leads to look at (``eviction_candidates``), default all."""
        cutoff = now - RETENTION_SECONDS
        open_retention = self.settings.open_lead_retention_days * 86400
        gone = []
        if candidates is None:
            candidates = [lead_id for lead_id, _ in self.leads.activity()]
        for lead_id in candidates:
            # Not kept in memory for the look: most candidates are open deals that stay.
            lead = self.leads.peek(lead_id) if lead_id is not None else None
            if lead is None or lead.last_ts >= cutoff:
                continue
            if self._more_may_come(lead, now, RETENTION_SECONDS):
                continue
            with lead.reading():
                facts = self.deriver.all_facts(lead)
            # An open lead is stale once silent for the open-lead retention in the history
            # read too: replaying a year, a deal of 200 days ago was forgotten on the wall
            # clock before the read reached its next move, which then started a new lead
            # (100,000 leads forgotten 154,437 times).
            stale = lead.last_ts < now - open_retention and not self._more_may_come(
                lead, now, open_retention
            )
            if not stale and any(f[2] is None for f in facts):
                continue
            part = self.partitions.get(lead.partition)
            if part is not None:
                # Its live facts and the 7-day levels' leave; in the periods its facts move
                # from the kept part to the archive (the changelogged rollups).
                part.apply(facts, -1)
                part.archive(facts)
            del self.leads[lead.lead_id]
            gone.append(lead)
        return gone

    def customer_candidates(self, now: float) -> Iterator[str | None]:
        """Keys of the customers holding something from before the start of ``last_year``
        (``forget_customers`` decides), with a None after every ``SCAN_CHUNK`` scanned."""
        before = self.clock.period_watermark(now)
        for i, customer in enumerate(list(self.customers.values()), 1):
            if customer.oldest < before or customer.last_ts < before:
                yield customer.customer_id
            if i % SCAN_CHUNK == 0:
                yield None

    def forget_customers(
        self, now: float, candidates: Iterable[str | None]
    ) -> tuple[list[CustomerState], list[CustomerState]]:
        """Customers (and costs without one) bounded by the longest window, ``last_year``:
        forgotten once not active, every fact before its start and unchanged for
        ``CUSTOMER_IDLE_SECONDS``; otherwise what of them left every window is dropped
        (``CustomerState.compact``). Returns (forgotten, compacted), for the changelog; no
        window changes (the facts that go are retracted, the rest is the same)."""
        before = self.clock.period_watermark(now)
        idle = now - CUSTOMER_IDLE_SECONDS
        gone: list[CustomerState] = []
        compacted: list[CustomerState] = []
        for key in candidates:
            customer = self.customers.get(key) if key is not None else None
            if customer is None:
                continue
            quiet = customer.last_ts < before and customer.changed_at <= idle
            forget = quiet and not customer.live
            if not forget and customer.oldest >= before:
                continue  # active and nothing to drop (or unchanged too recently)
            old = self.customer_facts.facts(customer)
            if forget:
                del self.customers[customer.customer_id]
                gone.append(customer)
                new: list[Fact] = []
            elif customer.compact(before):
                compacted.append(customer)
                new = self.customer_facts.facts(customer)
            else:
                continue
            part = self.partitions.get(customer.partition)
            if part is not None:
                retract, add = fact_diff(old, new)
                part.apply(retract, -1)
                part.apply(add, 1)
        return gone, compacted

    def _mark_read(self, partition: int, kind: EventKind, ts: float, now: float) -> None:
        mark = (partition, kind)
        got = self.reached.get(mark)
        self.reached[mark] = (ts if got is None or ts > got[0] else got[0], now)
        if partition not in self.reading_since:
            self.reading_since[partition] = now
            if self.reading_any_since == -math.inf:
                self.reading_any_since = now

    def note_backlog(self, behind: Iterable[tuple[int, EventKind]]) -> None:
        """The input topic partitions (partition, kind) with records not read yet: before an
        eviction round, from the consumer's end offsets (``_more_may_come``)."""
        self.backlog = frozenset(behind)

    def _more_may_come(self, lead: LeadState, now: float, horizon: float) -> bool:
        """Whether an input topic of the lead's partition is still being read and has not
        reached ``horizon`` seconds (the retention, 7 days; the open-lead retention for an
        open lead) past the lead's last event, or not delivered at all yet: more of its
        life may come. Live, topics are at the wall clock and this is the
        retention itself; in a replay of history, a lead is forgotten once the history read
        is 7 days past its last event, as it would have been live (forgotten on the wall
        clock, the rest of its life came as a new lead's: a year's replay forgot 10,000
        leads 21,343 times). A topic silent for a whole prune interval
        (``STREAMPROC_PRUNE_INTERVAL_SECONDS``, 60 s) is idle, not behind, unless the
        consumer says it has a backlog (``note_backlog``): on a busy machine a partition
        can wait longer than that for its turn to be fetched."""
        idle, partition, backlog = (
            self.settings.prune_interval_seconds,
            lead.partition,
            self.backlog,
        )
        for kind in EventKind:
            got = self.reached.get((partition, kind))
            behind = (partition, kind) in backlog  # silent, but not idle: not fetched yet
            if got is None:
                # a partition nothing was read on since this worker read its first event
                # (none at all: it is not catching up, e.g. idle after a restart)
                since = self.reading_since.get(partition, self.reading_any_since)
                if behind or now - since < idle:
                    return True
            elif got[0] < lead.last_ts + horizon and (behind or now - got[1] < idle):
                return True
        return False


def _lands_before(row: list[Any], before: float) -> bool:
    """Whether every fact of a business event's row lands before ``before``: a cost spread
    over a period up to its end (excluded), any other at its time."""
    end = row[7] if row[0] == "cost" else None
    return bool(end <= before) if end is not None else bool(row[1] < before)


class _CustomerBatch:
    """The internal customers topic's messages of one batch, applied to the customers; each
    touched customer derived once before and once after (as the leads are)."""

    def __init__(self, engine: Engine, now: float) -> None:
        self.engine = engine
        self.now = now
        self.late_before = engine.clock.period_watermark(now)  # the start of last_year
        self.before: dict[str, list[Fact]] = {}
        self.changed: dict[str, CustomerState] = {}

    def apply(self, msg: RawMessage, result: BatchResult) -> None:
        try:
            key, change, source = _decode_customer(msg.value)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            result.count(msg.topic, "invalid")
            self.engine._dead_letter(msg, f"not a customer message: {exc}", result)
            return
        customers = self.engine.customers
        customer = customers.get(key)
        if customer is None:
            customer = customers[key] = CustomerState(key, msg.partition)
        if key not in self.before:
            self.before[key] = self.engine.customer_facts.facts(customer)
        applied = (
            customer.put_deal(change)
            if isinstance(change, Deal)
            else customer.add_event(change[0], change[1])
        )
        if source is not None and not isinstance(change, Deal):
            result.count(source, self._outcome(applied, change[1]))
        if applied:
            customer.changed_at = self.now
            self.changed[key] = customer

    def _outcome(self, applied: bool, row: list[Any]) -> str:
        """A business event's outcome, as events.md has it for every input event."""
        if not applied:
            return "duplicate"
        return "late" if _lands_before(row, self.late_before) else "processed"

    def finish(self, result: BatchResult) -> None:
        facts = self.engine.customer_facts
        for key, old in self.before.items():
            customer = self.changed.get(key)
            if customer is None:
                continue
            retract, add = fact_diff(old, facts.facts(customer))
            part = self.engine.aggregates(customer.partition, self.now)
            part.apply(retract, -1)
            part.apply(add, 1)
        result.changed_customers.extend(self.changed.values())


def _decode_customer(value: bytes) -> tuple[str, Deal | tuple[str, list[object]], str | None]:
    """(customer key, a Deal or (event_id, event row), the business event's source topic)
    of an internal customers message. No topic: a deal, or an event forwarded by a version
    that counted its outcome where it arrived."""
    data = orjson.loads(value)
    if "deal" in data:
        key, *fields = data["deal"]
        return str(key), Deal(*fields), None
    key, event_id, row = data["event"]
    if not isinstance(row, list) or row[0] not in ("churn", "nps", "cost"):
        raise ValueError("unknown event row")
    topic = data.get("topic")
    return str(key), (str(event_id), row), None if topic is None else str(topic)
