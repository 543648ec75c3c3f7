"""The partials' two sides in a worker: the intake of the owner keys it owns (applied to its
table and changelogged) and the publish round (its partitions' changed summaries out, the
owned keys merged again, the sinks handed the owned series)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence

import faust
from faust.types import Message

from streamproc.engine.engine import Engine
from streamproc.kafka.app import Table, store_of
from streamproc.kafka.batch_send import BatchRecord, send_in_batches
from streamproc.partials.codec import is_partial_key, owner_of
from streamproc.partials.owner import PartialsInbox, PartialsView
from streamproc.partials.publisher import FullRounds, PartialsPublisher
from streamproc.runtime.slices import Stretches
from streamproc.serving.sinks.base import Sink
from streamproc.state.changelog import ChangelogWriter
from streamproc.state.disk import StateDB
from streamproc.worker.acks import ack_applied, current
from streamproc.worker.reading import KpiReader

__all__ = ["PartialsIntake", "PublishRounds", "disk_records"]

log = logging.getLogger(__name__)

FULL_PUBLISH_SECONDS = 30.0
PUBLISH_SHARE = 0.25  # at most this share of the event loop goes to publish rounds
# ... while the events keep up (no backlog), this share and no byte budget: at 1,000
# events/s and 20,000 leads the events take ~10 % of the loop, and every rep's summaries
# change every second (~1 MB, ~1.3 s of CPU to compute in full); within a quarter of the
# loop and 300 kB/s the changes queued faster than they went out.
LIVE_PUBLISH_SHARE = 0.75
# Partials re-sent per second at most by the whole group, counted as sent (compressed),
# changed keys oldest first (PartialsPublisher): 100 reps and 100,000 leads changed ~7 MB of
# summaries (as JSON) every second, and computing, sending and merging them all took most of
# a worker's loop. A worker gets the share of its partitions: a budget per worker doubled
# the group's publishing with two workers (each spent ~15 % of its loop on it against ~9 %
# alone), so they scaled 1.35x instead of sharing the work, while each partition's changes
# still go out at the same pace as with one worker.
PARTIALS_BYTES_PER_SECOND = 300_000
ARRIVAL_REFRESH_SECONDS = 0.25  # partials arrive in bursts after each round's send
_END = object()


class PartialsIntake:
    """Applies the partials messages of the keys this worker owns to its table."""

    def __init__(
        self, app: faust.App, table: Table, partitions: int, ready: Callable[[], bool]
    ) -> None:
        self.app = app
        self.table = table
        self.inbox = PartialsInbox(partitions)
        self.log = ChangelogWriter(table)
        self.ready = ready
        self.arrived = asyncio.Event()  # set once a batch is applied (``PublishRounds``)

    @property
    def store(self) -> MutableMapping[bytes, bytes]:
        return store_of(self.table)

    async def handle(self, batch: list[Message]) -> None:
        """Apply a batch of partials messages, changelog the table, then ack them. Routed
        in batches like the events (through Faust's per-message path, a full round's
        thousands of partials held up the fetch loop for up to ~1 s), and handled apart
        from the fetch loop (``BatchRoute.apart``): their changelog write does not hold up
        the events fetched meanwhile."""
        await ack_applied(self.app, batch, self.apply(current(self.app, batch, self.ready())))

    async def apply(self, batch: list[Message]) -> list[Message]:
        # Stored and changelogged by us rather than by ``table[key] = value``: Faust would
        # end the changelog with multi-record batches (see streamproc.state.changelog).
        store = self.store
        writes = self.inbox.apply(
            store, ((msg.key or b"", msg.value or b"", msg.partition) for msg in batch)
        )
        try:
            await self.log.write(
                (key, value, partition) for (key, partition), value in writes.items()
            )
        except BaseException:
            self.inbox.unwritten(store, writes)  # the batch is read again
            raise
        if writes:
            self.arrived.set()
        return batch


class PublishRounds:
    """The timer's publish round, each taking at most ``PUBLISH_SHARE`` of the loop."""

    def __init__(
        self,
        app: faust.App,
        engine: Engine,
        topic: str,
        intake: PartialsIntake,
        view: PartialsView,
        reader: KpiReader,
        sinks: Sequence[Sink],
        ready: Callable[[], bool],
        keeping_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.engine = engine
        self.topic = topic
        self.intake = intake
        self.view = view
        self.reader = reader
        self.sinks = sinks
        self.ready = ready
        self.keeping_up = keeping_up
        self.publisher = PartialsPublisher(engine.settings.partitions)
        self.full_rounds = FullRounds(FULL_PUBLISH_SECONDS)
        self._last = time.monotonic()
        self._next = 0.0  # monotonic: no publish round before
        self._full_due = False
        self._refreshing = asyncio.Lock()  # one refresh of the view at a time
        self._ahead: tuple[threading.Thread, PartialsView] | None = None

    def keep_only(self, active: set[int]) -> None:
        self.publisher.keep_only(active)

    def refresh_ahead(
        self,
        source: Callable[[], tuple[Mapping[bytes, bytes], set[int]]],
        after: Callable[[], object] = lambda: None,
    ) -> None:
        """Before the worker starts, or at a rebalance: merge the partials ``source`` gives
        (records of the partials table, and their partitions: the data dir's, or the
        broker's table copies fetched ahead) into a view of their own in a thread, while
        the group's join waits (half the session on tansu). The first refresh, after the
        recovery, adopts it and merges again only what differs: at 100,000 leads that
        refresh took ~0.5 s after the join, the largest step of a restart's recovery. The
        thread starts once ``after`` returns. One not adopted yet stays (a rebalance soon
        after the start): the refresh checks every key's bytes anyway."""
        if self._ahead is not None:
            return
        ahead = PartialsView(self.engine.settings.partitions)
        thread = threading.Thread(
            target=_refresh_ahead,
            args=(ahead, source, after),
            name="partials-view-ahead",
            daemon=True,
        )
        thread.start()
        self._ahead = thread, ahead

    async def refresh_view(self, busy: Stretches | None = None) -> None:
        """Merge the partials changed since the last refresh into the view that /metrics
        serves. At recovery: the partials this worker holds now (a restart's data dir holds
        them all), rather than after its first round, which publishes every summary first
        (2.4 s at 10,000 leads on a loaded machine) and only then refreshes the view."""
        async with self._refreshing:  # a refresh under way would drop the keys adopted
            if self._ahead is not None:
                (thread, ahead), self._ahead = self._ahead, None
                await asyncio.to_thread(thread.join)
                self.view.adopt(ahead)
            await (busy or Stretches()).drain(
                self.view.refresh(self.intake.store, self.reader.owned())
            )

    async def refresh_on_arrival(self) -> None:
        """Refresh the view as soon as partials are applied (then at most every
        ``ARRIVAL_REFRESH_SECONDS``), not at the next round: a round refreshed right after
        sending, before its own partials came back through the topic, so every change
        waited a whole round more (rounds ~4 s apart at 1,000 events/s and 20,000 leads on
        a loaded machine: ratios and quantiles 15 s and more behind their counts)."""
        arrived = self.intake.arrived
        while True:
            await arrived.wait()
            arrived.clear()
            if not self._stopped():
                try:
                    await self.refresh_view()
                except Exception:  # the next arrival or round refreshes again
                    log.exception("refreshing the partials' view failed")
            await asyncio.sleep(ARRIVAL_REFRESH_SECONDS)

    def _stopped(self) -> bool:
        return bool(self.app.rebalancing) or not self.ready()

    async def run(self) -> None:
        if self._stopped() or time.monotonic() < self._next:
            return  # the last round was long: its share of the loop is used up (see below)
        started = time.monotonic()
        now = time.time()
        busy = Stretches()
        live = self.keeping_up()
        if not await self._publish(now, started, busy, live):
            return
        # The owner side, sliced too: decoding and merging what changed, then the samples.
        await self.refresh_view(busy)
        owned = await busy.drain(self.reader.owned_samples_lazily(now))
        for sink in self.sinks:
            await sink.publish(owned, now)  # returns at once: sinks work in the background
        # Under a backlog a round may take long; the next one waits until this one's work is
        # at most PUBLISH_SHARE of the time since it started (LIVE_PUBLISH_SHARE while the
        # events keep up), so that events and the SLA timer get the rest.
        self._next = started + busy.total / (LIVE_PUBLISH_SHARE if live else PUBLISH_SHARE)

    async def _publish(self, now: float, started: float, busy: Stretches, live: bool) -> bool:
        """This worker's partitions' changed summaries out (within the byte budget unless
        ``live``: the events keep up); False if cut short."""
        engine = self.engine
        # Re-send everything now and then: a new owner whose recovery missed the tail of the
        # partials changelog is healed within this period.
        full = self.full_rounds.due(list(engine.partitions), now, self._full_due)
        # Until this round has run to its end, the changes it took are not published.
        self._full_due = True
        # The budget of the time since the last round (a long round delays the next one).
        since, self._last = started - self._last, started
        budget = (
            None
            if live
            else int(_owned_bytes_per_second(engine) * min(since, FULL_PUBLISH_SECONDS))
        )
        messages = self.publisher.round(engine.partitions, engine.clock, now, full, budget)
        out: list[BatchRecord] = []
        while True:
            with busy:
                message = next(messages, _END)
            if message is _END:
                break
            if message is not None:
                out.append(message)  # type: ignore[arg-type]
            await busy.pause()
            if self._stopped():
                return False
        for sent in await send_in_batches(self.app, self.topic, out):
            sent.add_done_callback(_log_failed_send)
        self._full_due = False
        return True


def _refresh_ahead(
    view: PartialsView,
    source: Callable[[], tuple[Mapping[bytes, bytes], set[int]]],
    after: Callable[[], object],
) -> None:
    after()
    started = time.monotonic()
    try:
        table, partitions = source()
        for _ in view.refresh(table, partitions):
            pass
    except Exception:  # the first refresh merges everything instead
        log.warning("the partials' view not merged ahead", exc_info=True)
        return
    log.info(
        "partials' view of partitions %s merged ahead in %.2f s",
        sorted(partitions), time.monotonic() - started,
    )  # fmt: skip


def disk_records(db: StateDB, held: Collection[str] = ()) -> tuple[dict[bytes, bytes], set[int]]:
    """Every record of the partials table's database but those of the owner keys ``held``
    (merged already), and the partitions it holds."""
    partitions = db.partitions()
    records = {
        key: value
        for p in sorted(partitions)
        for key, value in db.items(p)
        if not held or not is_partial_key(key) or owner_of(key) not in held
    }
    return records, set(partitions)


def _owned_bytes_per_second(engine: Engine) -> float:
    """This worker's share of the group's partials budget: that of its partitions."""
    return PARTIALS_BYTES_PER_SECOND * len(engine.partitions) / engine.settings.partitions


def _log_failed_send(sent: asyncio.Future[object]) -> None:
    # A lost partial is re-sent by the next full round (FULL_PUBLISH_SECONDS).
    if not sent.cancelled() and sent.exception() is not None:
        log.warning("publishing partials failed: %r", sent.exception())
