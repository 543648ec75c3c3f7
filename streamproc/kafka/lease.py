"""A write lease on the group membership: nothing is produced while it is not known to stand.

Kafka fences a producer only with transactions, which tansu does not have. Without them a
worker frozen past its session (a SIGSTOP, a VM paused, a GC or swap storm) wakes up,
goes on with what it had fetched and appends to the changelogs, the alerts and the
partials topic before a heartbeat's answer tells it that it left the group: its writes
land behind those of the partitions' new owner, and the compacted changelog keeps the
zombie's older state (bug 19 in docs/reliability.md: 13 - 68 leads wrong in 4 runs of 5).

The lease: the group coordinator counts a member's session from the last heartbeat (or
join) it received, so a member whose last answered heartbeat was *sent* less than the
session ago is still a member, whatever happened meanwhile. The monotonic clock runs on
through a SIGSTOP, so a frozen worker finds its lease run out the moment it thaws. Until
a heartbeat or a join renews it, the producer fails every batch it has not sent yet
(``MembershipLost``): the batch's events are not acked and its partitions' next owner, or
this worker after its rejoin, applies them again.

What is left: a freeze in the microseconds between the check and the socket write, and,
with the idempotent producer (real Kafka), a batch being resent after a broker error (its
first attempt may have been appended already). docs/reliability.md, bug 19.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import JoinGroupRequest

__all__ = ["MembershipLease", "MembershipLost", "fence_sends", "membership_lease", "renew_on"]

log = logging.getLogger(__name__)
# Taken off the session: a write let through at the lease's last instant reaches the broker
# within milliseconds, and the partitions' next owner writes only after the session has run
# out, the group has rebalanced (a heartbeat interval, 0.25 s, plus a join) and it has
# recovered them.
MARGIN_SECONDS = 1.0
SYNC_GROUP = 14  # the API key of SyncGroup requests


class MembershipLost(KafkaError):  # type: ignore[misc]
    """A write refused: this worker's group membership is not known to stand."""

    retriable = False


class MembershipLease:
    """When this worker last knew itself a member of its group, on the monotonic clock.

    Renewed from the consumer's thread (heartbeats, joins), read from the worker's loop
    (the producer): one float written and read whole, no lock needed."""

    def __init__(self, session_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.term = max(session_seconds - MARGIN_SECONDS, session_seconds / 2)
        self.clock = clock
        # None: never a member yet, nothing to fence (a worker owns no partition before
        # its first join).
        self._until: float | None = None

    def renew(self, sent_at: float) -> None:
        """The group answered a request sent at ``sent_at``: this member stood then."""
        self._until = max(self._until or sent_at, sent_at + self.term)

    def release(self) -> None:
        """Nothing to fence until the next join: this worker left its group."""
        self._until = None

    def revoke(self) -> None:
        """The group said this member is not one of its current generation."""
        if self._until is not None:
            self._until = -1.0

    def stands(self) -> bool:
        until = self._until  # read once: the consumer's thread may change it meanwhile
        return until is None or self.clock() < until

    def why_not(self) -> str:
        """What a refused write tells: why, and what happens to its events."""
        until = self._until
        if until is not None and until < 0:
            cause = "the group answered that this worker is not in its current generation"
        else:
            since = self.clock() - (until or 0.0) + self.term
            cause = f"no heartbeat of this worker answered for {since:.1f} s (its session)"
        return (
            f"{cause}: it may have left its group (frozen or cut off); the events are applied"
            " again once it has rejoined, or by their partitions' next owner"
        )


_leases: weakref.WeakKeyDictionary[Any, MembershipLease] = weakref.WeakKeyDictionary()


def membership_lease(app: Any) -> MembershipLease:
    """The lease of ``app``'s group membership (one per app, made on first use)."""
    lease = _leases.get(app)
    if lease is None:
        lease = _leases[app] = MembershipLease(float(app.conf.broker_session_timeout))
    return lease


def renew_on(coordinator: GroupCoordinator, lease: MembershipLease) -> None:
    """Renew ``lease`` with each heartbeat and group sync ``coordinator`` has answered,
    from when its request was sent; revoke it when a heartbeat's answer says this member
    is gone (unknown member, older generation: aiokafka then forgets its member id) or
    the member leaves the group while the worker runs on (aiokafka leaves when no fetch
    was asked for within the poll interval); release it when the worker leaves on its way
    out.

    aiokafka's heartbeat counts "rebalance in progress" as a success too: the member is
    still in the group until it rejoins or the rebalance times out. A worker stopping
    (SIGTERM) applies no more events, and what it still writes (its last changelog write,
    its table copies) is what its partitions' next owner expects; fenced, those were
    refused ("table copies not published") and the restart read more. A worker whose
    lease had run out or was revoked stays fenced on its way out."""
    heartbeat = coordinator._do_heartbeat
    send = coordinator._send_req
    join_complete = coordinator._on_join_complete
    leave = coordinator._maybe_leave_group
    sync_sent = [lease.clock()]

    async def heartbeating() -> bool:
        sent_at = lease.clock()
        answered: bool = await heartbeat()
        if answered:
            lease.renew(sent_at)
        elif coordinator.member_id == JoinGroupRequest.UNKNOWN_MEMBER_ID:
            lease.revoke()
        return answered

    async def sending(request: Any) -> Any:
        if request.API_KEY == SYNC_GROUP:
            sync_sent[0] = lease.clock()
        return await send(request)

    async def joined(*args: Any) -> Any:
        # Called with the sync's answer: renewed from when its request left, so that an
        # answer read after a freeze renews nothing.
        lease.renew(sync_sent[0])
        return await join_complete(*args)

    async def leaving() -> None:
        stopping = coordinator._closing.done()
        await leave()
        if stopping and lease.stands():
            lease.release()
        else:
            lease.revoke()

    coordinator._do_heartbeat = heartbeating
    coordinator._send_req = sending
    coordinator._on_join_complete = joined
    coordinator._maybe_leave_group = leaving


def fence_sends(producer: Any, lease: MembershipLease) -> None:
    """Make aiokafka's ``producer`` fail the batches it has queued, rather than send them,
    whenever ``lease`` does not stand.

    The check is where the sender takes batches from the queue for a produce request,
    before the idempotent producer numbers them (a numbered batch never sent would stop
    every later one with OutOfOrderSequenceNumber). A batch queued again for a resend
    after a broker error is failed too, but not by an idempotent producer: it is numbered
    already (the broker drops it if its first attempt was appended, and appends it late
    otherwise)."""
    accumulator = producer._message_accumulator
    drain = accumulator.drain_by_nodes

    def draining(ignore_nodes: Any, muted_partitions: Any = frozenset()) -> Any:
        if not lease.stands():
            _fail_queued(accumulator, lease)
        return drain(ignore_nodes, muted_partitions)

    accumulator.drain_by_nodes = draining


def _fail_queued(accumulator: Any, lease: MembershipLease) -> None:
    numbered = accumulator._txn_manager is not None  # idempotent: resends are numbered
    failed = 0
    for tp, batches in list(accumulator._batches.items()):
        kept = [batch for batch in batches if batch.retry_count and numbered]
        for batch in batches:
            if batch.retry_count and numbered:
                continue
            if batch.retry_count:
                # A resend left the in-flight set when it was queued again; its first
                # drain's callback takes it out of that set once it is done.
                accumulator._pending_batches.add(batch)
            batch.drain_ready()  # a sender waiting for room appends to a new batch
            batch.failure(exception=MembershipLost(f"not sent to {tp}: {lease.why_not()}"))
            failed += 1
        batches.clear()
        batches.extend(kept)
        if not batches:
            del accumulator._batches[tp]
    if failed:
        log.warning("%d record batches not sent: %s", failed, lease.why_not())
