"""The targets topic, read whole by every worker: every partition from its start, then
followed, so that a target set, changed or removed takes effect within a second or two on
every worker, and a restarted worker finds them all again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streamproc.config import Settings
from streamproc.contract.targets import TargetKey, parse_target
from streamproc.exceptions import InvalidEvent
from streamproc.kafka.clients import consumer

__all__ = ["TargetsReader", "targets_partitions"]

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
# A bad target message and why: the caller dead-letters it
Refused = Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]]


async def targets_partitions(
    reader: AIOKafkaConsumer, topic: str, default: int
) -> list[TopicPartition]:
    """The targets topic's partitions as the broker has them (``default`` of them while it
    does not know the topic). It may have fewer than ``STREAMPROC_PARTITIONS``
    (docs/events.md): assigned one it lacks, the seek and the end offsets waited for that
    partition for good, so no worker applied a target and ``targets list`` never answered."""
    await reader.topics()  # metadata of every topic: one named would create it (tansu)
    found = reader.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in (sorted(found) if found else range(default))]


class TargetsReader:
    """The targets in force (``targets``), kept up to date from the topic."""

    def __init__(self, settings: Settings, topic: str, refused: Refused | None = None) -> None:
        self.settings = settings
        self.topic = topic
        self.refused = refused
        self._targets: dict[TargetKey, float] = {}

    @property
    def targets(self) -> Mapping[TargetKey, float]:
        return self._targets

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one message; ``InvalidEvent`` if it is refused (nothing changes)."""
        target, amount = parse_target(key, value)
        if amount is None:
            self._targets.pop(target, None)
        else:
            self._targets[target] = amount

    async def run(self) -> None:
        """Read and follow the topic until cancelled; a broker outage is retried."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: read again from the start
                log.warning("targets: reading %s failed (%r); retrying", self.topic, exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self) -> None:
        reader = consumer(self.settings, enable_auto_commit=False, group_id=None)
        await reader.start()
        try:
            reader.assign(await targets_partitions(reader, self.topic, self.settings.partitions))
            await reader.seek_to_beginning()
            while True:
                batches = await reader.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        await self._record(record)
        finally:
            await reader.stop()

    async def _record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            self.apply(record.key, record.value)
        except InvalidEvent as exc:
            log.warning(
                "targets: refused %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.reason,
            )
            if self.refused is not None:
                await self.refused(record, exc.reason)
