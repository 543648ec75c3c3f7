"""The fetch loop's batch routes: each routed topic reaches its own handler in batches, in
offset order, and only unrouted topics take Faust's per-message path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import faust
import pytest
from faust.types import TP, Message

from streamproc.config import Settings
from streamproc.kafka import transport
from streamproc.kafka.topics import topic_names
from streamproc.kafka.transport import BatchRoute, ExactConsumer
from streamproc.state.store import disk_stores
from streamproc.worker.topology import Topology

EVENTS = TP("sales.lead-created", 0)
PARTIALS = TP("streamproc-partials", 1)
OTHER = TP("elsewhere", 0)


def _message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None)


class _Fetches:
    """Two fetches, each with the three topics interleaved, then the fetcher stops."""

    def __init__(self) -> None:
        self.fetcher = type("Fetcher", (), {"_stopped": asyncio.Event()})()
        self.fetched: list[list[tuple[TP, int]]] = [
            [(tp, offset) for offset in range(start, start + 4) for tp in (EVENTS, PARTIALS, OTHER)]
            for start in (0, 4)
        ]

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if not self.fetched:
            self.fetcher._stopped.set()
            return
        for tp, offset in self.fetched.pop(0):
            yield tp, _message(tp, offset)


def _consumer(monkeypatch: pytest.MonkeyPatch) -> ExactConsumer:
    """A worker's consumer, created in the test's event loop (Faust binds it to that loop)."""
    transport.install()
    consumer = faust.App("routes", broker="kafka://127.0.0.1:1").consumer
    assert isinstance(consumer, ExactConsumer)
    monkeypatch.setattr(type(consumer), "flow_active", True)
    return consumer


async def test_each_routed_topic_reaches_its_handler_in_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = _consumer(monkeypatch)
    fetches = _Fetches()
    handled: dict[str, list[list[int]]] = {"events": [], "partials": []}
    per_message: list[tuple[str, int]] = []

    def handler(name: str):  # a route's handler
        async def handle(messages: list[Message]) -> None:
            handled[name].append([m.offset for m in messages])

        return handle

    async def callback(message: Message) -> None:
        per_message.append((message.topic, message.offset))

    consumer.getmany = fetches.getmany  # type: ignore[method-assign]
    consumer.callback = callback  # type: ignore[method-assign]
    transport.route_batches(
        consumer.app,
        BatchRoute(frozenset({EVENTS.topic}), handler("events"), 3),
        BatchRoute(frozenset({PARTIALS.topic}), handler("partials"), 3),
    )
    await asyncio.wait_for(ExactConsumer._drain_messages(consumer, fetches.fetcher), 3)

    # At most 3 a batch, never one batch across two fetches, every offset once in order.
    assert handled["events"] == [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert handled["partials"] == handled["events"]
    assert per_message == [(OTHER.topic, offset) for offset in range(8)]


def test_the_worker_routes_its_events_its_partials_and_its_standbys(tmp_path: Path) -> None:
    """A full publish round sends thousands of partials: through Faust's per-message path
    they held up the fetch loop, and the events fetched behind them, for up to ~1 s. The
    standbys' changelog records, about one per event, cost a second worker most of the
    CPU it added there."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    topology = Topology(settings)
    routed = {topic for route in transport._routes[topology.app] for topic in route.topics}
    names = topic_names(settings)
    changelogs = {store.topic for store in disk_stores(topology.app)}
    assert len(changelogs) >= 2  # the leads, the partials (and the customers, if any)
    assert routed == {*names.inputs.values(), names.partials, *changelogs}


async def test_a_route_of_a_topic_without_acks_leaves_nothing_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebalance waits until every message handed over is acked (Faust's wait_empty); a
    changelog's messages are never acked, so they must not be counted as pending."""
    consumer = _consumer(monkeypatch)
    fetches = _Fetches()
    monkeypatch.setattr(
        consumer.app.topics, "acks_enabled_for", lambda topic: topic == EVENTS.topic
    )
    pending: list[tuple[str, int]] = []

    async def handle(messages: list[Message]) -> None:
        unacked = consumer._unacked_messages
        pending.append((messages[0].topic, sum(1 for m in messages if m in unacked)))

    consumer.getmany = fetches.getmany  # type: ignore[method-assign]
    consumer.callback = handle  # type: ignore[method-assign,assignment]
    transport.route_batches(
        consumer.app,
        BatchRoute(frozenset({EVENTS.topic}), handle, 8),
        BatchRoute(frozenset({PARTIALS.topic}), handle, 8),
        BatchRoute(frozenset({OTHER.topic}), handle, 8),
    )
    await asyncio.wait_for(ExactConsumer._drain_messages(consumer, fetches.fetcher), 3)
    # Per fetch, the 4 records of each topic: the events pending until acked, the others not.
    each = [(EVENTS.topic, 4), (PARTIALS.topic, 0), (OTHER.topic, 0)]
    assert pending == each + each


async def test_a_route_handled_apart_holds_up_neither_the_fetches_nor_its_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partials' handler waits on its changelog write (100 - 290 ms a round at 100,000
    leads): the events fetched meanwhile go on to their handler."""
    consumer = _consumer(monkeypatch)
    fetches = _Fetches()
    release = asyncio.Event()
    events: list[list[int]] = []
    partials: list[list[int]] = []
    sought: list[dict[TP, int]] = []
    failed_once: list[bool] = []

    async def handle_events(messages: list[Message]) -> None:
        events.append([m.offset for m in messages])

    async def handle_partials(messages: list[Message]) -> None:
        await release.wait()
        if messages[0].offset == 3 and not failed_once:
            failed_once.append(True)
            raise RuntimeError("changelog write failed")
        partials.append([m.offset for m in messages])

    async def seek_to(partitions: dict[TP, int]) -> None:
        sought.append(dict(partitions))

    async def per_message(message: Message) -> None:
        pass

    consumer.getmany = fetches.getmany  # type: ignore[method-assign]
    consumer.callback = per_message  # type: ignore[method-assign]
    monkeypatch.setattr(consumer, "_seek_to", seek_to)
    monkeypatch.setattr(consumer, "assignment", lambda: {EVENTS, PARTIALS})
    monkeypatch.setattr(transport, "RETRY_SECONDS", 0.01)
    transport.route_batches(
        consumer.app,
        BatchRoute(frozenset({EVENTS.topic}), handle_events, 3),
        BatchRoute(frozenset({PARTIALS.topic}), handle_partials, 3, apart=True),
    )
    await asyncio.wait_for(ExactConsumer._drain_messages(consumer, fetches.fetcher), 3)
    assert events == [[0, 1, 2], [3], [4, 5, 6], [7]], "fetched and handled meanwhile"
    assert partials == []
    release.set()
    [in_hand] = consumer._apart.values()
    await asyncio.wait_for(asyncio.gather(*in_hand), 3)
    # the failed batch is read again from its first offset; the later ones went on, in order
    assert partials == [[0, 1, 2], [4, 5, 6], [7]]
    assert sought == [{PARTIALS: 3}]
