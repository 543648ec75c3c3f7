"""The worker's Kafka consumer settings that Faust does not expose."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.errors import IllegalStateError
from aiokafka.protocol.group import LeaveGroupRequest, LeaveGroupRequest_v0
from aiokafka.structs import TopicPartition
from faust.types import TP

from streamproc.config import Settings
from streamproc.kafka.app import create_app
from streamproc.kafka.transport import (
    FETCH_MAX_WAIT_MS,
    heartbeat_while_assigning,
    hold_changelogs_until_resumed,
    leave_at_generation_zero,
)


async def test_the_consumer_does_not_hold_fetches_for_faust_s_1500_ms(tmp_path: Path) -> None:
    """tansu answers a fetch only when its wait is over: 1,500 ms (Faust's) made events
    arrive up to 1.5 s late at a steady 1,000 events/s."""
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    assert FETCH_MAX_WAIT_MS <= 100
    assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS


def _joined(generation: int) -> tuple[GroupCoordinator, list[object]]:
    """aiokafka's coordinator as after a join at ``generation``, its requests recorded."""
    coordinator = GroupCoordinator.__new__(GroupCoordinator)
    coordinator.group_id, coordinator.member_id = "group", "member-1"
    coordinator.generation = generation
    coordinator._group_instance_id = None
    coordinator._rejoin_needed_fut = asyncio.get_running_loop().create_future()
    sent: list[object] = []

    async def send(request: object) -> None:
        sent.append(request)

    coordinator._send_req = send  # type: ignore[method-assign]
    return coordinator, sent


async def _assigned(response: object) -> dict[str, bytes]:
    return {}


@pytest.mark.parametrize("generation", [0, 1, 7])
async def test_a_leader_leaves_its_group_whatever_generation_it_joined(generation: int) -> None:
    """tansu's first generation is 0, which aiokafka took for "never joined": the member
    did not leave, and the next worker waited for its session to expire (10 s)."""
    coordinator, sent = _joined(generation)
    coordinator._perform_assignment = _assigned  # type: ignore[method-assign]
    leave_at_generation_zero(coordinator)
    await coordinator._perform_assignment(SimpleNamespace(generation_id=generation))
    await coordinator._maybe_leave_group()
    assert [type(r) for r in sent] == [LeaveGroupRequest]
    assert sent[0].build(LeaveGroupRequest_v0).to_object() == {  # type: ignore[attr-defined]
        "group": "group",
        "member_id": "member-1",
    }
    assert coordinator.generation == -1, "the generation is not reset after leaving"


@pytest.mark.parametrize("generation", [0, 1, 7])
async def test_a_follower_leaves_except_in_tansus_first_generation(generation: int) -> None:
    """Every member of tansu's generation 0 leaving at once left the group stuck for the
    next worker (tansu kept a member that left as its leader): only the leader leaves."""
    coordinator, sent = _joined(generation)
    coordinator._perform_assignment = _assigned  # type: ignore[method-assign]
    leave_at_generation_zero(coordinator)
    await coordinator._maybe_leave_group()
    assert [type(r) for r in sent] == ([] if generation == 0 else [LeaveGroupRequest])


async def test_a_member_that_never_joined_sends_no_leave() -> None:
    coordinator, sent = _joined(-1)
    leave_at_generation_zero(coordinator)
    await coordinator._maybe_leave_group()
    assert sent == []


async def test_a_member_heartbeats_while_it_handles_its_assignment() -> None:
    """aiokafka heartbeated only after the assignment callback: a worker that caught up
    its changelogs there for longer than the session was dropped from the group."""
    coordinator, _ = _joined(3)
    coordinator._heartbeat_task = None
    beats: list[str] = []

    async def heartbeat_routine() -> None:
        beats.append("heartbeat")

    async def assignment_callback(*args: object) -> None:
        await asyncio.sleep(0)  # the worker's catch-up, while the heartbeat task runs
        beats.append(f"assigned {args}")

    coordinator._heartbeat_routine = heartbeat_routine  # type: ignore[method-assign]
    coordinator._on_join_complete = assignment_callback  # type: ignore[method-assign]
    heartbeat_while_assigning(coordinator)
    await coordinator._on_join_complete(3, "member-1", "faust", b"")
    assert beats == ["heartbeat", "assigned (3, 'member-1', 'faust', b'')"]
    task = coordinator._heartbeat_task
    assert task is not None
    coordinator._start_heartbeat_task()  # aiokafka's own start after the join: no second
    assert coordinator._heartbeat_task is task


async def test_changelog_partitions_are_assigned_paused_in_aiokafka() -> None:
    """aiokafka prefetched every changelog partition from offset 0 at each assignment (no
    committed offset), before Faust sought it to the disk copy's mark: the pause is set in
    the same step as the assignment, the event partitions are left to fetch."""
    subscription = SubscriptionState()
    subscription.subscribe({"app-leads-changelog", "events"})
    hold_changelogs_until_resumed(subscription, lambda tp: tp.topic.endswith("-changelog"))
    changelog, events = TopicPartition("app-leads-changelog", 0), TopicPartition("events", 0)
    subscription.assign_from_subscribed({changelog, events})
    assert subscription.paused_partitions() == {changelog}
    subscription.assign_from_subscribed({changelog})  # each assignment starts unpaused
    assert subscription.paused_partitions() == {changelog}


class _Fetching:
    """aiokafka's consumer as the consumer thread sees it: what is paused in it."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = assigned
        self.paused: set[TopicPartition] = set(assigned)

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, *tps: TopicPartition) -> None:
        self._assigned(tps)
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._assigned(tps)
        self.paused.difference_update(tps)

    def _assigned(self, tps: tuple[TopicPartition, ...]) -> None:
        if not set(tps) <= self.assigned:  # as aiokafka's subscription state
            raise IllegalStateError(f"No current assignment for partition {tps}")


def test_faust_s_pause_and_resume_of_changelogs_reach_aiokafka(tmp_path: Path) -> None:
    """Faust resumes a changelog partition once it has sought it (a standby, a recovery):
    then aiokafka fetches it; the event partitions' pauses stay Faust's own (a rebalance
    would drop what aiokafka prefetched of them)."""
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    table = app.Table("leads", partitions=2)
    consumer = app.consumer
    thread = consumer._thread
    changelog = TP(table.changelog_topic.get_topic_name(), 0)
    events, revoked = TP("events", 0), TP(changelog.topic, 1)
    kafka = _Fetching({TopicPartition(*changelog), TopicPartition(*events)})
    thread._consumer = kafka

    def on_thread() -> None:
        thread.thread_loop.run_until_complete(asyncio.sleep(0))

    consumer.resume_partitions({changelog, events, revoked})
    on_thread()
    assert kafka.paused == {TopicPartition(*events)}  # the events' pause is not aiokafka's
    consumer.pause_partitions({changelog, revoked})
    on_thread()
    assert kafka.paused == {TopicPartition(*changelog), TopicPartition(*events)}
    thread.thread_loop.close()
