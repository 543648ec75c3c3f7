"""Topic names derived from the settings, their idempotent creation, and the start-up check."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamproc.config import Settings
from streamproc.exceptions import BrokerUnreachable, TopicsError
from streamproc.kafka.clients import admin_client, check_connection

__all__ = [
    "INPUT_EVENTS",
    "METRIC_KPIS",
    "TopicNames",
    "check_topics",
    "create_topics",
    "topic_names",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

INPUT_EVENTS = ("lead-created", "contact-attempted", "stage-changed", "email-opened")
METRIC_KPIS = ("response-time", "activity", "pipeline", "email")
_COMPACT = {"cleanup.policy": "compact"}
_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS: another worker won the race


@dataclass(frozen=True)
class TopicNames:
    """Every topic of one deployment, keyed the way the code refers to them."""

    inputs: dict[str, str]
    """Event kind (``lead-created``...) -> topic."""
    metrics: dict[str, str]
    """KPI (``response-time``...) -> its compacted metric topic."""
    dead_letter: str
    alerts: str
    partials: str
    """Internal, compacted; keyed like the inputs, so it must be co-partitioned with them."""

    @property
    def co_partitioned(self) -> list[str]:
        """Topics that must share one partition count (one lead: one partition number)."""
        return [*self.inputs.values(), self.partials]

    @property
    def compacted(self) -> list[str]:
        return [*self.metrics.values(), self.partials]

    def all(self) -> list[str]:
        return [*self.inputs.values(), self.dead_letter, self.alerts, *self.compacted]


def topic_names(settings: Settings) -> TopicNames:
    """The topic names of a deployment, all under ``settings.topic_prefix``."""
    return TopicNames(
        inputs={kind: settings.topic(kind) for kind in INPUT_EVENTS},
        metrics={kpi: settings.topic(f"metrics.{kpi}") for kpi in METRIC_KPIS},
        dead_letter=settings.topic("dead-letter"),
        alerts=settings.topic("alerts"),
        partials=settings.topic("internal.partials"),
    )


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = admin_client(settings, client_id=f"{settings.app_id}-admin")
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """Partition count of every existing topic.

    Asks for all topics on purpose: a metadata request naming a missing topic makes tansu
    (and Kafka with auto-create on) create it with the broker's default count.
    """
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}


async def create_topics(settings: Settings) -> list[str]:
    """Create the missing topics with ``settings.partitions``; return the names created.

    Existing topics are left alone (logged, with a warning if their count differs).
    """
    names = topic_names(settings)
    async with _admin(settings) as admin:
        existing = await _partition_counts(admin)
        for name in (n for n in names.all() if n in existing):
            _report_existing(name, existing[name], settings.partitions)
        missing = [n for n in names.all() if n not in existing]
        if not missing:
            return []
        response = await admin.create_topics([_new_topic(n, names, settings) for n in missing])
    created = _created(response.topic_errors)
    if created:
        log.info("created topics %s (%d partitions)", ", ".join(created), settings.partitions)
    return created


def _new_topic(name: str, names: TopicNames, settings: Settings) -> NewTopic:
    configs = _COMPACT if name in names.compacted else {}
    replicas = settings.kafka_replication_factor
    return NewTopic(name, settings.partitions, replicas, topic_configs=dict(configs))


def _report_existing(name: str, count: int, wanted: int) -> None:
    if count == wanted:
        log.info("topic %s exists (%d partitions), left alone", name, count)
    else:
        log.warning("topic %s exists with %d partitions, settings say %d", name, count, wanted)


def _created(topic_errors: Iterable[tuple[object, ...]]) -> list[str]:
    """Names created, from ``(topic, error_code[, message])``; raise on a real failure."""
    created, failed = [], []
    for name, code, *message in topic_errors:
        if code == 0:
            created.append(str(name))
        elif code != _TOPIC_EXISTS:
            failed.append(f"{name}: {message[0] if message and message[0] else code}")
    if failed:
        raise TopicsError(f"could not create topics: {'; '.join(failed)}")
    return created


async def check_topics(settings: Settings) -> None:
    """Raise ``TopicsError`` (one line) if an input topic is missing or counts differ."""
    names = topic_names(settings)
    async with _admin(settings) as admin:
        counts = await _partition_counts(admin)
    missing = [n for n in names.inputs.values() if n not in counts]
    present = {n: counts[n] for n in names.co_partitioned if n in counts}
    problems = []
    if missing:
        problems.append(f"missing input topics: {', '.join(missing)}")
    if len(set(present.values())) > 1:
        problems.append(f"topics not co-partitioned: {_by_count(present, settings.partitions)}")
    elif present and (count := next(iter(present.values()))) != settings.partitions:
        # Co-partitioned, but Faust's changelogs get settings.partitions: PartitionsMismatch.
        problems.append(
            f"topics have {count} partitions but STREAMPROC_PARTITIONS={settings.partitions}: "
            f"{', '.join(present)}"
        )
    if problems:
        raise TopicsError("; ".join([*problems, _fix(present, settings.partitions)]))


def _fix(present: dict[str, int], wanted: int) -> str:
    """What makes the topics right: create leaves existing topics alone, so odd ones go first."""
    odd = [name for name, count in present.items() if count != wanted]
    if not odd:
        return "run `streamproc topics create`"
    fix = f"delete {', '.join(odd)} and run `streamproc topics create`"
    if len(set(present.values())) == 1:
        fix += f" (or set STREAMPROC_PARTITIONS={present[odd[0]]} first)"
    return fix


def _by_count(counts: dict[str, int], wanted: int) -> str:
    """``a, b have 4 partitions, c has 8``: the configured count first, then the others."""
    groups: dict[int, list[str]] = defaultdict(list)
    for name, count in counts.items():
        groups[count].append(name)
    order = sorted(groups, key=lambda count: (count != wanted, -len(groups[count]), count))
    parts = []
    for i, count in enumerate(order):
        verb = "has" if len(groups[count]) == 1 else "have"
        unit = " partitions" if i == 0 else ""
        parts.append(f"{', '.join(groups[count])} {verb} {count}{unit}")
    return ", ".join(parts)


async def wait_for_broker(
    settings: Settings,
    timeout: float = 60.0,  # noqa: ASYNC109 - a retry budget that names itself in the error
    *,
    log_every: float = 3.0,
) -> None:
    """Return once the broker answers a metadata request; raise ``BrokerUnreachable``."""
    deadline = time.monotonic() + timeout
    next_log = time.monotonic()
    while True:
        remaining = deadline - time.monotonic()
        try:
            # A host that drops packets would otherwise hang for aiokafka's 40 s request timeout.
            await asyncio.wait_for(_probe(settings), timeout=max(0.5, min(5.0, remaining)))
            return
        except (KafkaError, OSError) as exc:  # OSError covers TimeoutError
            now = time.monotonic()
            if now >= deadline:
                raise BrokerUnreachable(
                    f"broker {settings.broker_url} not reachable after {timeout:g}s: "
                    f"{exc or type(exc).__name__}"
                ) from None
            if now >= next_log:
                log.warning("broker %s not reachable, retrying", settings.broker_url)
                next_log = now + log_every
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


async def _probe(settings: Settings) -> None:
    # First one connection of our own: a failure that no retry cures (a certificate, a
    # password, a protocol mismatch) raises BrokerError with one line, at once.
    await check_connection(settings)
    async with _admin(settings) as admin:
        await admin.describe_cluster()
