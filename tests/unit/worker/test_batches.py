"""A batch whose changelog write failed is read again; its events are duplicates by then and
change nothing, so the leads they changed must go with the next write, before any ack, and
have their SLA deadlines scheduled then."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from faust.types import TP, Message

from streamproc.config import Settings
from streamproc.engine.customer import CustomerState, Deal
from streamproc.engine.lead import LeadState
from streamproc.kafka.topics import topic_names
from streamproc.worker.batches import KEEPING_UP_SECONDS
from streamproc.worker.topology import Topology


def _lead_created(settings: Settings, lead_id: str, offset: int) -> Message:
    event = {
        "event_id": f"ev-{lead_id}",
        "occurred_at": "2026-12-04T10:00:00Z",
        "lead_id": lead_id,
        "rep_id": "rep-1",
        "source": "web",
    }
    topic = settings.topic("lead-created")
    return Message(
        topic, 0, offset, 1.0, 0, None, lead_id.encode(), orjson.dumps(event), None,
        generation_id=0,
    )  # fmt: skip


def _ready_on_partition_0(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Topology:
    """A ready topology owning partition 0 of lead-created, in generation 0."""
    topology = Topology(settings)
    topology.ready = True
    tp = TP(settings.topic("lead-created"), 0)
    monkeypatch.setattr(topology.app.assignor, "assigned_actives", lambda: {tp})
    monkeypatch.setattr(type(topology.app), "consumer_generation_id", 0)
    return topology


async def test_leads_of_a_failed_write_go_with_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    topology = _ready_on_partition_0(settings, monkeypatch)
    acked: list[int] = []
    monkeypatch.setattr(topology.app.consumer, "ack", lambda m: acked.append(m.offset))
    writes: list[list[str]] = []

    async def write(leads: list[LeadState], marks: object = ()) -> None:
        writes.append(sorted(lead.lead_id for lead in leads))
        if len(writes) == 1:
            raise ConnectionError("the broker went away")

    monkeypatch.setattr(topology.lead_log, "write", write)
    first = [_lead_created(settings, "lead-1", 0)]
    with pytest.raises(ConnectionError):
        await topology.events.handle(first)
    assert acked == []
    # read again (the fetch loop seeks back), then the next events
    await topology.events.handle([_lead_created(settings, "lead-1", 0)])
    await topology.events.handle([_lead_created(settings, "lead-2", 1)])
    assert writes == [["lead-1"], ["lead-1"], ["lead-2"]]
    assert acked == [0, 1]
    # and their SLA deadlines were scheduled with that write
    deadlines = topology.alerts.watch.deadlines(topology.engine.leads)
    assert {lead_id for lead_id, _, _ in deadlines[0]} == {"lead-1", "lead-2"}


async def test_customers_forgotten_go_to_their_changelog_as_tombstones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    names = topic_names(settings)
    topology = Topology(settings, optional=frozenset({names.customers, *names.business.values()}))
    topology.ready = True
    flow = topology.events.customers
    assert flow is not None
    now = 1_800_000_000.0
    gone, kept = CustomerState("gone", 0), CustomerState("kept", 1)
    gone.add_event("c1", ["cost", now - 800 * 86400, 5.0, "other", "none", None, None, None])
    kept.add_event("c2", ["cost", now - 800 * 86400, 5.0, "other", "none", None, None, None])
    kept.put_deal(Deal("L1", 2, now - 900 * 86400, 10.0, "smb", "r1", "ads"))
    kept.put_deal(Deal("L2", 2, now - 870 * 86400, 10.0, "smb", "r1", "ads"))
    kept.put_deal(Deal("L3", 2, now - 850 * 86400, 10.0, "smb", "r1", "ads"))
    kept.put_deal(Deal("L4", 2, now - 10 * 86400, 10.0, "smb", "r1", "ads"))
    topology.engine.customers.update(gone=gone, kept=kept)
    flow.unwritten["gone"] = gone  # changed by a batch whose write failed
    written: list[tuple[list[str], list[str]]] = []

    async def write(customers: list[CustomerState], forgotten: list[CustomerState]) -> None:
        written.append(([c.customer_id for c in customers], [c.customer_id for c in forgotten]))

    monkeypatch.setattr(flow.log, "write", write)
    await topology._forget_customers(now, ["gone", "kept"])
    assert written == [(["kept"], ["gone"])]
    assert list(topology.engine.customers) == ["kept"] and not flow.unwritten
    # the first deal and the last win before last_year's start stay
    assert sorted(kept.deals) == ["L1", "L3", "L4"] and not kept.events


async def test_a_batch_read_from_a_backlog_says_the_events_are_not_keeping_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publish rounds take more of the loop while the events keep up (``PublishRounds``):
    a batch's oldest record tells a backlog (a replay, a catch-up) from live events."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    topology = _ready_on_partition_0(settings, monkeypatch)
    monkeypatch.setattr(topology.app.consumer, "ack", lambda m: None)

    async def write(leads: list[LeadState], marks: object = ()) -> None:
        return None

    monkeypatch.setattr(topology.lead_log, "write", write)
    events = topology.events
    assert events.keeping_up()  # nothing read yet
    live = _lead_created(settings, "lead-1", 0)
    live.timestamp = time.time() - 0.2
    await events.handle([live])
    assert events.keeping_up()
    backlog = _lead_created(settings, "lead-2", 1)
    backlog.timestamp = time.time() - 60
    await events.handle([backlog, _lead_created(settings, "lead-3", 2)])
    assert not events.keeping_up()
    at, oldest = events._last_batch  # no batch since: the backlog is read
    events._last_batch = (at - 2 * KEEPING_UP_SECONDS, oldest)
    assert events.keeping_up()


def _invalid(settings: Settings, offset: int) -> Message:
    return Message(
        settings.topic("lead-created"), 0, offset, 1.0, 0, None, b"lead-x", b"{not json", None,
        generation_id=0,
    )  # fmt: skip


def _dead_letters_to(
    topology: Topology, monkeypatch: pytest.MonkeyPatch, fate: Callable[[list[int]], str]
) -> list[int]:
    """The offsets of the dead letters ``topology`` sends, in order; ``fate(sent so
    far)``: "ok", "fails" (its delivery) or "unqueued" (the send itself raises). The
    changelog writes succeed."""

    async def write(leads: object, marks: object = ()) -> None:
        return None

    monkeypatch.setattr(topology.lead_log, "write", write)
    sent: list[int] = []

    async def send(key: bytes, value: bytes) -> asyncio.Future[None]:
        sent.append(orjson.loads(value)["offset"])
        verdict = fate(sent)
        if verdict == "unqueued":
            raise ConnectionError("the producer's queue is full")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if verdict == "fails":
            done.set_exception(ConnectionError("the broker went away"))
        else:
            done.set_result(None)
        return done

    monkeypatch.setattr(topology.events.dead_letter_topic, "send", send)
    return sent


async def test_what_failed_to_go_out_goes_with_the_next_batch_and_only_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read again after a failed send, a batch's events are duplicates and publish nothing:
    the dead letter that did not go out must go with the next batch, the one that did not
    again (its reader would count it twice)."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    topology = _ready_on_partition_0(settings, monkeypatch)
    acked: list[int] = []
    monkeypatch.setattr(topology.app.consumer, "ack", lambda m: acked.append(m.offset))
    sent = _dead_letters_to(topology, monkeypatch, lambda sent: "fails" if sent == [0] else "ok")
    with pytest.raises(ConnectionError):
        await topology.events.handle([_invalid(settings, 0), _invalid(settings, 1)])
    assert acked == [] and sent == [0, 1]
    # read again (duplicates now: nothing new to dead-letter), then the next event
    await topology.events.handle([_invalid(settings, 0), _invalid(settings, 1)])
    await topology.events.handle([_lead_created(settings, "lead-2", 2)])
    assert sent == [0, 1, 0], "the dead letter that failed was not sent again, or one twice"
    assert acked == [0, 1, 2]


def test_what_waits_to_go_out_from_a_partition_that_moved_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its next owner reads the events again and publishes them itself."""
    from streamproc.engine.engine import DeadLetterItem, RawMessage

    settings = Settings(_env_file=None, data_dir=tmp_path)
    box = Topology(settings).events.outbox
    for partition in (0, 1):
        raw = RawMessage("lead-created", "t", partition, 7, b"k", b"{", None)
        box.dead_letters.append(DeadLetterItem(raw, "not JSON"))
        box.deals.append((f"c{partition}", b"{}", partition))
    box.keep_only({1})
    assert [d.message.partition for d in box.dead_letters] == [1]
    assert box.deals == [("c1", b"{}", 1)]


async def test_a_send_that_fails_to_be_queued_leaves_what_was_queued_before_it_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    topology = _ready_on_partition_0(settings, monkeypatch)
    sent = _dead_letters_to(
        topology, monkeypatch, lambda sent: "unqueued" if sent == [0, 1] else "ok"
    )
    batch = [_invalid(settings, 0), _invalid(settings, 1)]
    with pytest.raises(ConnectionError):
        await topology.events.handle(batch)
    await topology.events.handle([_invalid(settings, 0), _invalid(settings, 1)])
    assert sent == [0, 1, 1], "the dead letter queued and delivered was sent again"


def test_the_outbox_keeps_what_a_batch_read_again_would_not_publish() -> None:
    """Dead letters and deals: the engine makes them once. Business events and rerouted
    keyless events: the read again forwards them again (kept, they would go twice)."""
    from streamproc.engine.engine import BatchResult, DeadLetterItem, RawMessage
    from streamproc.worker.batches import Outbox

    result = BatchResult()
    result.dead_letters.append(
        DeadLetterItem(RawMessage("lead-created", "t", 0, 7, b"k", b"{", None), "not JSON")
    )
    result.deals.append(("c1", b'{"deal": []}', 0))
    result.forward.append(("c1", b'{"event": []}', 0))
    result.reroute.append(("t", b"k", b"{}", 1))
    box = Outbox()
    box.add(result)
    assert box.dead_letters == result.dead_letters
    assert box.deals == result.deals
    assert set(vars(box)) == {"dead_letters", "deals"}
