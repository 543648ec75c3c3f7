"""The raw changelog reader on the real broker: resumes after a checked record, reads a log
whole when the copy is not of it (digest differs, log shorter), hands records in order."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence

from aiokafka.admin import NewTopic

from streamproc.config import Settings
from streamproc.kafka import clients
from streamproc.kafka.changelog_reader import ChangelogRecord, Resume, read_changelog


class Copy:
    """What a caller keeps: the records per partition, and whether it was told to start over."""

    def __init__(self) -> None:
        self.records: dict[int, list[ChangelogRecord]] = {}
        self.fresh: set[int] = set()

    async def apply(self, partition: int, records: Sequence[ChangelogRecord], fresh: bool) -> None:
        if fresh:
            self.fresh.add(partition)
            self.records[partition] = []
        self.records.setdefault(partition, []).extend(records)


async def _log(settings: Settings, topic: str) -> None:
    admin = clients.admin_client(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = clients.producer(settings)
    await producer.start()
    try:
        # One record per batch: tansu's end offset is the last batch's first offset + 1
        # (streamproc.state.changelog ends each write with a one-record batch for that).
        for i in range(100):
            key, value = b"k%d" % (i % 30), b"v%d" % i
            await producer.send_and_wait(topic, key=key, value=value, partition=0)
        await producer.send_and_wait(topic, key=b"only", value=None, partition=1)
    finally:
        await producer.stop()


def test_read_resume_and_read_again(settings_factory) -> None:
    settings = settings_factory()
    topic = f"reader-{secrets.token_hex(3)}"
    asyncio.run(_log(settings, topic))

    whole = Copy()
    read = asyncio.run(read_changelog(settings, topic, {0: None, 1: None}, whole.apply))
    assert (read.records, read.ends) == ({0: 100, 1: 1}, {0: 100, 1: 1})
    assert [r.offset for r in whole.records[0]] == list(range(100))
    assert whole.records[0][42].value == b"v42" and whole.records[1][0].value is None
    assert whole.fresh == {0, 1}

    at = whole.records[0][59]
    tail = Copy()
    resume = {0: Resume(59, 59, at.digest)}
    assert asyncio.run(read_changelog(settings, topic, resume, tail.apply)).records == {0: 40}
    assert [r.offset for r in tail.records[0]] == list(range(60, 100))
    assert not tail.fresh

    # The record at the checked offset is another one: not this log, read it all again.
    other = {0: Resume(59, 59, whole.records[0][58].digest)}
    again = Copy()
    assert asyncio.run(read_changelog(settings, topic, other, again.apply)).records == {0: 100}
    assert again.fresh == {0}
    # A copy that went further than the log goes: not this log either.
    ahead = {1: Resume(5, 5, whole.records[1][0].digest)}
    assert asyncio.run(read_changelog(settings, topic, ahead, Copy().apply)).records == {1: 1}
    # At the end already: nothing to read.
    done = {1: Resume(0, 0, whole.records[1][0].digest)}
    assert asyncio.run(read_changelog(settings, topic, done, Copy().apply)).records == {1: 0}


def test_partitions_checked_together_are_judged_each_on_its_own(settings_factory) -> None:
    """The records at the checked offsets of all partitions come in the same fetches: a
    partition whose copy is of the log resumes, beside one whose copy is not, both ways."""
    settings = settings_factory()
    topic = f"reader-{secrets.token_hex(3)}"
    asyncio.run(_log(settings, topic))
    whole = Copy()
    asyncio.run(read_changelog(settings, topic, {0: None, 1: None}, whole.apply))
    first, last = whole.records[0][59], whole.records[1][0]

    resumed_and_ahead = {0: Resume(59, 59, first.digest), 1: Resume(5, 5, last.digest)}
    copy = Copy()
    read = asyncio.run(read_changelog(settings, topic, resumed_and_ahead, copy.apply))
    assert read.records == {0: 40, 1: 1}
    assert copy.fresh == {1}
    assert [r.offset for r in copy.records[0]] == list(range(60, 100))

    other_and_done = {0: Resume(59, 59, last.digest), 1: Resume(0, 0, last.digest)}
    copy = Copy()
    read = asyncio.run(read_changelog(settings, topic, other_and_done, copy.apply))
    assert read.records == {0: 100, 1: 0}
    assert copy.fresh == {0}


def test_an_assigned_consumer_fetches_nothing_before_it_is_told_where(settings_factory) -> None:
    """aiokafka fetches an assigned partition from its first offset as soon as it can: a
    year's take-over fetched 2 MiB of each changelog partition that way and threw it away,
    before the reader sought where it resumes."""
    settings = settings_factory()
    topic = f"reader-{secrets.token_hex(3)}"
    asyncio.run(_log(settings, topic))

    async def fetched_while_idle() -> tuple[list[object], int]:
        async with clients.assigned(settings, topic, [0, 1], 1 << 20) as on:
            await asyncio.sleep(0.5)  # several of the fetcher's rounds
            # aiokafka keeps what it fetched, not handed out yet, here
            held = list(on.consumer._fetcher._records)
            on.consumer.seek(on.partitions[0], 98)
            on.consumer.resume(on.partitions[0])
            got = await on.consumer.getmany(on.partitions[0], timeout_ms=2000)
            return held, sum(len(records) for records in got.values())

    held, read = asyncio.run(fetched_while_idle())
    assert held == []
    assert read == 2, "a partition resumed after its seek is read from there"
