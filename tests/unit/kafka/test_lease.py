"""The membership lease: renewed by answered heartbeats and joins, run out on the
monotonic clock after the session, revoked when the group says the member is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.protocol.group import JoinGroupRequest

from streamproc.kafka.lease import SYNC_GROUP, MembershipLease, renew_on


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_stands_for_the_session_less_a_margin_after_the_answered_request() -> None:
    clock = Clock()
    lease = MembershipLease(6.0, clock)
    assert lease.stands(), "before the first join there is nothing to fence"
    lease.renew(100.0)
    clock.now = 104.9
    assert lease.stands()
    clock.now = 105.1  # 6 s session - 1 s margin
    assert not lease.stands()
    assert "5.1 s" in lease.why_not()
    lease.renew(90.0)  # an answer to an older request extends nothing
    assert not lease.stands()
    lease.renew(105.0)
    assert lease.stands()


def test_a_revoked_lease_stands_again_only_after_a_renewal() -> None:
    clock = Clock()
    lease = MembershipLease(6.0, clock)
    lease.renew(100.0)
    lease.revoke()
    assert not lease.stands()
    assert "not in its current generation" in lease.why_not()
    lease.renew(100.5)
    assert lease.stands()


class Closing:
    def __init__(self) -> None:
        self.closed = False

    def done(self) -> bool:
        return self.closed


class Request:
    def __init__(self, api_key: int) -> None:
        self.API_KEY = api_key


class Coordinator:
    """aiokafka's GroupCoordinator as far as ``renew_on`` wraps it; a heartbeat or a
    request takes ``freeze`` seconds between its send and its answer (a SIGSTOP)."""

    def __init__(self, clock: Clock, answer: bool, freeze: float = 0.0) -> None:
        self.clock, self.answer, self.freeze = clock, answer, freeze
        self.member_id = "member-1"
        self.joined: list[Any] = []
        self._closing = Closing()

    async def _do_heartbeat(self) -> bool:
        self.clock.now += self.freeze
        return self.answer

    async def _send_req(self, request: Request) -> str:
        self.clock.now += self.freeze
        return "answer"

    async def _on_join_complete(self, *args: Any) -> None:
        self.joined.append(args)

    async def _maybe_leave_group(self) -> None:
        self.member_id = JoinGroupRequest.UNKNOWN_MEMBER_ID


def _member(answer: bool = True) -> tuple[Clock, MembershipLease, Coordinator]:
    """A clock, a lease and a coordinator renewing it (``renew_on``)."""
    clock = Clock()
    lease = MembershipLease(6.0, clock)
    coordinator = Coordinator(clock, answer=answer)
    renew_on(coordinator, lease)  # type: ignore[arg-type]
    return clock, lease, coordinator


async def _join(coordinator: Coordinator, generation: int) -> None:
    """A group sync answered, then aiokafka's join completion."""
    await coordinator._send_req(Request(SYNC_GROUP))
    await coordinator._on_join_complete(generation, "member", "protocol", "assignment")


async def test_an_answered_heartbeat_renews_from_when_it_was_sent() -> None:
    clock, lease, coordinator = _member(answer=True)
    assert await coordinator._do_heartbeat() is True
    clock.now += 4.0
    assert lease.stands()
    coordinator.freeze = 30.0  # frozen between the send and the answer: no renewal
    await coordinator._do_heartbeat()
    assert not lease.stands()


async def test_an_unanswered_heartbeat_renews_nothing_and_a_join_does() -> None:
    clock, lease, coordinator = _member(answer=False)  # e.g. the coordinator unreachable
    await _join(coordinator, 7)
    assert coordinator.joined == [(7, "member", "protocol", "assignment")]
    clock.now += 4.5
    assert await coordinator._do_heartbeat() is False
    assert lease.stands(), "one unanswered heartbeat is not the end of the session"
    clock.now += 1.0
    assert not lease.stands()
    await _join(coordinator, 8)
    assert lease.stands()


async def test_a_sync_answer_read_after_a_freeze_renews_nothing() -> None:
    _, lease, coordinator = _member(answer=True)
    await _join(coordinator, 7)
    coordinator.freeze = 30.0
    await _join(coordinator, 8)
    assert not lease.stands()


async def test_a_heartbeat_answered_with_unknown_member_revokes_the_lease() -> None:
    _, lease, coordinator = _member(answer=True)
    await coordinator._do_heartbeat()
    coordinator.answer = False
    coordinator.member_id = JoinGroupRequest.UNKNOWN_MEMBER_ID  # what aiokafka does then
    await coordinator._do_heartbeat()
    assert not lease.stands()


async def test_a_worker_stopping_writes_its_last_records() -> None:
    """A SIGTERM: the leave forgets the member id, and the table copies written after it
    must still go out (the restart reads them)."""
    clock, lease, coordinator = _member(answer=True)
    await coordinator._do_heartbeat()
    coordinator._closing.closed = True  # aiokafka's close() leaves the group
    await coordinator._maybe_leave_group()
    clock.now += 60.0  # no heartbeat after a leave
    assert lease.stands()


async def test_a_member_leaving_while_the_worker_runs_on_or_a_zombie_stopping_is_fenced() -> None:
    clock, lease, coordinator = _member(answer=True)
    await coordinator._do_heartbeat()
    await coordinator._maybe_leave_group()  # aiokafka's leave after the poll interval
    assert not lease.stands()
    await _join(coordinator, 8)
    assert lease.stands()
    clock.now += 30.0  # frozen past its session, then SIGTERMed
    coordinator._closing.closed = True
    await coordinator._maybe_leave_group()
    assert not lease.stands()


async def _accumulator_with(retry: bool, numbered: bool) -> tuple[Any, Any, Any]:
    """aiokafka's own record accumulator holding one batch (a resend when ``retry``: taken
    for a produce request, then queued again as the sender does after a broker error);
    ``numbered``: an idempotent producer's."""
    from aiokafka.producer.message_accumulator import MessageAccumulator
    from aiokafka.structs import TopicPartition

    accumulator = MessageAccumulator(None, 16384, 0, 30)
    tp = TopicPartition("t", 0)
    sent = await accumulator.add_message(tp, b"k", b"v", timeout=1)
    batch = accumulator._batches[tp][0]
    if retry:
        assert accumulator._pop_batch(tp) is batch
        accumulator.reenqueue(batch)
    if numbered:
        accumulator._txn_manager = object()
    return accumulator, batch, sent


async def test_a_resend_is_failed_too_unless_the_producer_numbers_its_batches() -> None:
    from streamproc.kafka.lease import MembershipLost, _fail_queued

    lease = MembershipLease(6.0, Clock())
    lease.revoke()
    lease.renew(0.0)  # run out long ago
    errors: list[dict[str, Any]] = []  # what the batches' callbacks raised
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    for retry, numbered, kept in [(False, False, 0), (True, False, 0), (True, True, 1)]:
        accumulator, batch, sent = await _accumulator_with(retry, numbered)
        _fail_queued(accumulator, lease)
        assert sum(map(len, accumulator._batches.values())) == kept, (retry, numbered)
        if not kept:
            with pytest.raises(MembershipLost):
                await sent
            await asyncio.sleep(0)  # the batch's own callbacks
            assert batch not in accumulator._pending_batches, "in flight for ever: no flush"
    assert not errors, errors
