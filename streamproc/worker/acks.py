"""Acking routed batches: only what a handler applied, and only messages current to apply."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

import faust
from faust.types import Message

__all__ = ["ack_applied", "current", "leave_unacked"]


async def ack_applied(
    app: faust.App, batch: list[Message], applying: Awaitable[list[Message]]
) -> None:
    """Ack the messages ``applying`` returns once it is done; none if it fails or is
    cancelled (a shutdown cancels changelog writes in flight): the batch must be read
    again (``take_events`` would ack it all the same)."""
    try:
        applied = await applying
    except BaseException:
        leave_unacked(app, batch)
        raise
    ack = app.consumer.ack
    for message in applied:
        message.tracked = True
        ack(message)


def current(app: faust.App, batch: list[Message], ready: bool) -> list[Message]:
    """Messages this worker may apply now; the others are left unacked, to be read again.

    ``take_events`` can yield events fetched before a rebalance after the reassignment
    has already dropped their partition's leads (or while its recovery runs): applied
    then, they would start a lead afresh and changelog a state older than the truth.
    """
    generation = app.consumer_generation_id
    active = app.assignor.assigned_actives() if ready else set()
    out = []
    for message in batch:
        if message.generation_id == generation and message.tp in active:
            out.append(message)
        else:
            leave_unacked(app, [message])
    return out


def leave_unacked(app: faust.App, messages: Iterable[Message]) -> None:
    """Untracked, take_events' ack becomes a no-op (see ``kafka.transport.ExactConsumer``):
    the offsets are not committed and the events are read again after the next seek."""
    unacked = app.consumer.unacked
    for message in messages:
        message.tracked = False
        unacked.discard(message)
