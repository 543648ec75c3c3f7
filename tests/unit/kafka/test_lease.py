"""The membership lease: renewed by answered heartbeats and joins, run out on the
monotonic clock after the session, revoked when the group says the member is gone."""

from __future__ import annotations

from typing import Any

from aiokafka.protocol.group import JoinGroupRequest

from streamproc.kafka.lease import MembershipLease, renew_on


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


class Coordinator:
    """aiokafka's GroupCoordinator as far as ``renew_on`` wraps it; a heartbeat takes
    ``freeze`` seconds between its send and its answer (a SIGSTOP in between)."""

    def __init__(self, clock: Clock, answer: bool, freeze: float = 0.0) -> None:
        self.clock, self.answer, self.freeze = clock, answer, freeze
        self.member_id = "member-1"
        self.joined: list[Any] = []

    async def _do_heartbeat(self) -> bool:
        self.clock.now += self.freeze
        return self.answer

    async def _on_join_complete(self, *args: Any) -> None:
        self.joined.append(args)

    async def _maybe_leave_group(self) -> None:
        self.member_id = JoinGroupRequest.UNKNOWN_MEMBER_ID


async def test_an_answered_heartbeat_renews_from_when_it_was_sent() -> None:
    clock = Clock()
    lease = MembershipLease(6.0, clock)
    coordinator = Coordinator(clock, answer=True)
    renew_on(coordinator, lease)  # type: ignore[arg-type]
    assert await coordinator._do_heartbeat() is True
    clock.now += 4.0
    assert lease.stands()
    coordinator.freeze = 30.0  # frozen between the send and the answer: no renewal
    await coordinator._do_heartbeat()
    assert not lease.stands()


async def test_an_unanswered_heartbeat_renews_nothing_and_a_join_does() -> None:
    clock = Clock()
    lease = MembershipLease(6.0, clock)
    coordinator = Coordinator(clock, answer=False)  # e.g. the coordinator unreachable
    renew_on(coordinator, lease)  # type: ignore[arg-type]
    await coordinator._on_join_complete(7, "member", "protocol", "assignment")
    assert coordinator.joined == [(7, "member", "protocol", "assignment")]
    clock.now += 4.5
    assert await coordinator._do_heartbeat() is False
    assert lease.stands(), "one unanswered heartbeat is not the end of the session"
    clock.now += 1.0
    assert not lease.stands()
    await coordinator._on_join_complete(8, "member", "protocol", "assignment")
    assert lease.stands()


async def test_a_heartbeat_answered_with_unknown_member_revokes_the_lease() -> None:
    clock = Clock()
    lease = MembershipLease(6.0, clock)
    coordinator = Coordinator(clock, answer=True)
    renew_on(coordinator, lease)  # type: ignore[arg-type]
    await coordinator._do_heartbeat()
    coordinator.answer = False
    coordinator.member_id = JoinGroupRequest.UNKNOWN_MEMBER_ID  # what aiokafka does then
    await coordinator._do_heartbeat()
    assert not lease.stands()


async def test_a_worker_leaving_on_its_way_out_writes_its_last_records() -> None:
    """A SIGTERM: the leave forgets the member id, and the table copies written after it
    must still go out (the restart reads them)."""
    clock = Clock()
    lease = MembershipLease(6.0, clock)
    coordinator = Coordinator(clock, answer=True)
    renew_on(coordinator, lease)  # type: ignore[arg-type]
    await coordinator._do_heartbeat()
    await coordinator._maybe_leave_group()
    clock.now += 60.0  # no heartbeat after a leave
    assert lease.stands()
