"""``streamproc targets``: set, list and delete the targets (quotas) on the topic
``sales.targets``; the workers follow it (``streamproc.kafka.targets``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from streamproc.config import Settings
from streamproc.contract.targets import (
    TargetKey,
    encode_target,
    parse_target,
    target_key,
)
from streamproc.exceptions import InvalidEvent, StreamprocError
from streamproc.kafka.clients import consumer, producer
from streamproc.kafka.targets import targets_partitions
from streamproc.kafka.topics import topic_names

__all__ = [
    "checked_target",
    "delete_target",
    "list_targets",
    "plausible_targets",
    "publish_targets",
    "set_target",
]

Target = tuple[str, str, "str | None", float]  # measure, period, rep (None: team), value


# Rough shares of a simulated lead's life (tools/sales_team.py), for targets a team can
# about reach: contact attempts per lead, the share of leads won, a won deal's value.
_ATTEMPTS_PER_LEAD = 2.0
_WON_SHARE = 0.2
_NEW_SHARE = 0.7
_DEAL_VALUE = 20_000.0
_DAY, _MONTH = 86_400.0, 30 * 86_400.0


def _round(value: float) -> float:
    """Two significant figures, at least 1: what a manager would set."""
    if value < 1:
        return 1.0
    digits = len(str(int(value))) - 2
    return float(round(value, -digits)) if digits > 0 else float(round(value))


def plausible_targets(reps: Iterable[str], leads_per_second: float) -> list[Target]:
    """Targets for a simulated team of ``reps`` getting ``leads_per_second``: each rep's
    daily attempts and monthly revenue, the team's daily leads, monthly deals and new
    customers, and its revenue per month, quarter and year."""
    reps = list(reps)
    per_month = leads_per_second * _MONTH
    revenue = per_month * _WON_SHARE * _DEAL_VALUE
    out: list[Target] = []
    for rep in reps:
        attempts = leads_per_second * _DAY * _ATTEMPTS_PER_LEAD / len(reps)
        out.append(("contact_attempts", "day", rep, _round(attempts)))
        out.append(("revenue_won", "month", rep, _round(revenue / len(reps))))
    out += [
        ("leads_created", "day", None, _round(leads_per_second * _DAY)),
        ("deals_won", "month", None, _round(per_month * _WON_SHARE)),
        ("new_customers", "month", None, _round(per_month * _WON_SHARE * _NEW_SHARE)),
        ("revenue_won", "month", None, _round(revenue)),
        ("revenue_won", "quarter", None, _round(3 * revenue)),
        ("revenue_won", "year", None, _round(12 * revenue)),
    ]
    return out


def checked_target(measure: str, period: str, rep: str | None, value: float | None) -> bytes:
    """The message's value, checked as a worker checks it: one clear line if refused."""
    try:
        raw = encode_target(measure, period, rep, value)
        parse_target(target_key(measure, period, rep), raw)
    except InvalidEvent as exc:
        raise StreamprocError(f"target refused, nothing changed: {exc.reason}") from None
    return raw


async def publish_targets(settings: Settings, targets: Iterable[Target]) -> int:
    """Send the targets (each checked first: one bad target sends none of them)."""
    messages = [
        (target_key(m, p, rep), checked_target(m, p, rep, value)) for m, p, rep, value in targets
    ]
    out = producer(settings, acks="all")
    await out.start()
    try:
        topic = topic_names(settings).targets
        sent = [await out.send(topic, key=key, value=value) for key, value in messages]
        await asyncio.gather(*sent)
    finally:
        await out.stop()
    return len(messages)


async def set_target(
    settings: Settings, measure: str, period: str, rep: str | None, value: float
) -> None:
    await publish_targets(settings, [(measure, period, rep, value)])


async def delete_target(settings: Settings, measure: str, period: str, rep: str | None) -> None:
    """A tombstone: the workers drop the target, compaction the message."""
    checked_target(measure, period, rep, None)
    out = producer(settings, acks="all")
    await out.start()
    try:
        key = target_key(measure, period, rep)
        await (await out.send(topic_names(settings).targets, key=key, value=None))
    finally:
        await out.stop()


async def list_targets(settings: Settings) -> Mapping[TargetKey, float]:
    """The targets in force: the topic read from its start to its end."""
    topic = topic_names(settings).targets
    reader = consumer(settings, enable_auto_commit=False, group_id=None)
    await reader.start()
    try:
        partitions = await targets_partitions(reader, topic, settings.partitions)
        reader.assign(partitions)
        await reader.seek_to_beginning()
        ends = await reader.end_offsets(partitions)
        out: dict[TargetKey, float] = {}
        while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
            for records in (await reader.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        target, value = parse_target(record.key, record.value)
                    except InvalidEvent:
                        continue  # refused by the workers too (and dead-lettered)
                    if value is None:
                        out.pop(target, None)
                    else:
                        out[target] = value
        return out
    finally:
        await reader.stop()
