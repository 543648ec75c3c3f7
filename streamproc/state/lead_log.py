"""The leads' changelog: the only durable state, written so that no offset outruns it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from streamproc.engine.engine import DeadMark
from streamproc.engine.lead import LeadState
from streamproc.engine.lead_store import LeadStore
from streamproc.kafka.app import Table
from streamproc.state.changelog import END_MARKER, ChangelogWriter, Record
from streamproc.state.store import DiskStore

__all__ = ["END_MARKER", "LeadLog", "decode_recovered"]

DEAD_MARK = b"\x00dead-lettered\x00"  # + "topic:partition:offset" -> b"1"


class LeadLog:
    """Writes lead states to the table's changelog and awaits their delivery."""

    def __init__(self, table: Table) -> None:
        self.writer = ChangelogWriter(table)

    async def write(self, leads: Iterable[LeadState], dead_marks: Iterable[DeadMark] = ()) -> None:
        """Changelog the leads and await delivery: the batch is acked only after this.
        ``dead_marks``: messages dead-lettered, kept in the same partition as the leads of
        their source partition."""
        leads = list(leads)
        store = self.writer.table.data
        if isinstance(store, DiskStore):
            store.changing(leads)
        # The leads themselves, not their bytes: each is serialized when its turn comes, so the
        # newest state is appended last whichever task wrote it.
        records: list[Record] = [(lead.lead_id.encode(), lead, lead.partition) for lead in leads]
        records += [
            (DEAD_MARK + f"{topic}:{partition}:{offset}".encode(), b"1", partition)
            for topic, partition, offset in dead_marks
        ]
        await self.writer.write(records)


def decode_recovered(
    store: LeadStore, partition_of: Callable[[Any], int | None] = lambda _: None
) -> set[DeadMark]:
    """Recovery fills the store with changelog bytes: turn them into lead states once.

    ``partition_of``: the changelog partition a key was read from, which is its lead's
    (``LeadLog.write``): such a lead is kept undecoded until first read
    (``LeadState.undecoded``); a key of unknown partition is decoded now. Returns the
    dead-letter marks found."""
    marks: set[DeadMark] = set()
    for key in store.raw_records():
        raw = store.pop(key)
        if not raw:  # tombstones (end markers, evicted leads) leave nothing behind
            continue
        if isinstance(key, bytes) and key.startswith(DEAD_MARK):
            topic, partition, offset = key[len(DEAD_MARK) :].decode().rsplit(":", 2)
            marks.add((topic, int(partition), int(offset)))
            continue
        of = partition_of(key)
        if of is None or not isinstance(key, bytes):
            lead = LeadState.loads(raw)
        else:
            lead = LeadState.undecoded(key.decode(), of, raw)
        store[lead.lead_id] = lead
    return marks
