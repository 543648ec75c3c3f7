"""Topic names derived from the settings, their idempotent creation, and the start-up check."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamproc.config import Settings
from streamproc.exceptions import BrokerUnreachable, TopicsError
from streamproc.kafka.clients import admin_client

__all__ = [
    "BUSINESS_EVENTS",
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
# Optional (spec/business-events.md): a deployment without them runs as before.
BUSINESS_EVENTS = ("cost-recorded", "customer-churned", "nps-responded")
METRIC_KPIS = ("response-time", "activity", "pipeline", "email", "customers")
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
    business: dict[str, str]
    """Optional business event kind (``cost-recorded``...) -> topic; any partition count."""
    targets: str
    """Compacted: the targets (quotas), read whole by every worker; any partition count."""
    customers: str
    """Internal: the business events and the won deals, repartitioned by customer; it must
    be co-partitioned with the inputs (a customer's partition number is a lead's)."""
    snapshots: str
    """Internal, compacted, co-partitioned: the aggregates snapshots of stopped workers
    (``kafka.snapshot_topic``); optional: without it a take-over derives them."""

    @property
    def co_partitioned(self) -> list[str]:
        """Topics that must share one partition count (one lead: one partition number)."""
        return [*self.inputs.values(), self.partials, self.customers, self.snapshots]

    @property
    def compacted(self) -> list[str]:
        return [*self.metrics.values(), self.partials, self.targets, self.snapshots]

    def all(self) -> list[str]:
        return [
            *self.inputs.values(),
            *self.business.values(),
            self.customers,
            self.dead_letter,
            self.alerts,
            *self.compacted,
        ]


def topic_names(settings: Settings) -> TopicNames:
    """The topic names of a deployment, all under ``settings.topic_prefix``."""
    return TopicNames(
        inputs={kind: settings.topic(kind) for kind in INPUT_EVENTS},
        metrics={kpi: settings.topic(f"metrics.{kpi}") for kpi in METRIC_KPIS},
        dead_letter=settings.topic("dead-letter"),
        alerts=settings.topic("alerts"),
        partials=settings.topic("internal.partials"),
        business={kind: settings.topic(kind) for kind in BUSINESS_EVENTS},
        customers=settings.topic("internal.customers"),
        targets=settings.topic("targets"),
        snapshots=settings.topic("internal.snapshots"),
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


async def check_topics(settings: Settings) -> frozenset[str]:
    """Raise ``TopicsError`` (one line) if an input topic is missing or counts differ.

    Returns the optional topics that exist: the internal customers topic, and with it the
    business topics (without it their events could not reach their customers); the
    snapshots topic."""
    names = topic_names(settings)
    async with _admin(settings) as admin:
        counts = await _partition_counts(admin)
    missing = [n for n in names.inputs.values() if n not in counts]
    present = {n: counts[n] for n in names.co_partitioned if n in counts}
    business = frozenset(n for n in names.business.values() if n in counts)
    problems = []
    if missing:
        problems.append(f"missing input topics: {', '.join(missing)}")
    if business and names.customers not in counts:
        problems.append(f"business topics {', '.join(sorted(business))} need {names.customers}")
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
    snapshots = frozenset({names.snapshots} & counts.keys())
    return snapshots | (business | {names.customers} if names.customers in counts else set())


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


_CHECK = "is it running, and does STREAMPROC_BROKER_URL point at it?"


class _ConnectErrors(logging.Filter):
    """Swallows aiokafka's ``Unable connect to ...`` ERROR (one every 0.5 s, 1,420 lines in
    10 minutes without a broker) and keeps the last cause for our own, rarer line."""

    def __init__(self) -> None:
        super().__init__()
        self.cause: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Unable connect to"):
            return True
        error = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        self.cause = _cause(error) if isinstance(error, BaseException) else None
        return False


def _cause(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, TimeoutError):
        return "no answer"
    return str(error) or type(error).__name__


@contextmanager
def _quiet_connect_errors() -> Iterator[_ConnectErrors]:
    quiet = _ConnectErrors()
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addFilter(quiet)
    try:
        yield quiet
    finally:
        aiokafka_log.removeFilter(quiet)


async def wait_for_broker(
    settings: Settings,
    timeout: float = 60.0,  # noqa: ASYNC109 - a retry budget that names itself in the error
    *,
    log_every: float = 30.0,
) -> None:
    """Return once the broker answers a metadata request; raise ``BrokerUnreachable``.

    While it does not: one warning naming the broker, the cause and what to check, then a
    shorter line every ``log_every`` seconds.
    """
    started = time.monotonic()
    deadline = started + timeout
    next_log = started
    with _quiet_connect_errors() as quiet:
        while True:
            remaining = deadline - time.monotonic()
            try:
                # A host dropping packets would hang for aiokafka's 40 s request timeout.
                await asyncio.wait_for(_probe(settings), timeout=max(0.5, min(5.0, remaining)))
                if next_log > started:
                    log.info("broker %s reachable", settings.broker_url)
                return
            except (KafkaError, OSError) as exc:  # OSError covers TimeoutError
                now = time.monotonic()
                cause = quiet.cause or _cause(exc)
                if now >= deadline:
                    raise BrokerUnreachable(
                        f"broker {settings.broker_url} not reachable after {timeout:g}s "
                        f"({cause}): {_CHECK}"
                    ) from None
                if now >= next_log:
                    _log_unreachable(settings, cause, now - started, log_every)
                    next_log = now + log_every
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _log_unreachable(settings: Settings, cause: str, waited: float, log_every: float) -> None:
    if waited < 1.0:
        log.warning(
            "broker %s not reachable (%s): %s retrying every 0.5 s, a line every %g s",
            settings.broker_url,
            cause,
            _CHECK,
            log_every,
        )
    else:
        log.warning(
            "broker %s still not reachable after %.0f s (%s), retrying",
            settings.broker_url,
            waited,
            cause,
        )


async def _probe(settings: Settings) -> None:
    # The admin's start connects once first (kafka.clients): a failure that no retry cures
    # (a certificate, a password, a protocol mismatch) raises BrokerError with one line.
    async with _admin(settings) as admin:
        await admin.describe_cluster()
