"""The leads' changelog: the only durable state, written so that no offset outruns it."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

import faust

from streamproc.changelog import END_MARKER, ChangelogWriter, Record
from streamproc.lead import LeadState

__all__ = ["END_MARKER", "LeadLog", "decode_recovered"]

DEAD_MARK = b"\x00dead-lettered\x00"  # + "topic:partition" -> highest offset dead-lettered


class LeadLog:
    """Writes lead states to the table's changelog and awaits their delivery."""

    def __init__(self, table: faust.Table) -> None:
        self.writer = ChangelogWriter(table)

    async def write(
        self, leads: Iterable[LeadState], dead_marks: dict[tuple[str, int], int] | None = None
    ) -> None:
        """Changelog the leads and await delivery: the batch is acked only after this.
        ``dead_marks``: offsets already dead-lettered, kept in the same partition as the
        leads of their source partition."""
        # The leads themselves, not their bytes: each is serialized when its turn comes, so the
        # newest state is appended last whichever task wrote it.
        records: list[Record] = [(lead.lead_id.encode(), lead, lead.partition) for lead in leads]
        records += [
            (DEAD_MARK + f"{topic}:{partition}".encode(), str(offset).encode(), partition)
            for (topic, partition), offset in (dead_marks or {}).items()
        ]
        await self.writer.write(records)

    async def forget(self, leads: Iterable[LeadState]) -> None:
        """Tombstones: the next owner recovers nothing for these leads."""
        await self.writer.write((lead.lead_id.encode(), None, lead.partition) for lead in leads)


def decode_recovered(store: MutableMapping[Any, Any]) -> dict[tuple[str, int], int]:
    """Recovery fills the store with changelog bytes: turn them into lead states once.

    Returns the dead-letter marks found, keyed by (source topic, partition)."""
    marks: dict[tuple[str, int], int] = {}
    for key in [k for k, v in store.items() if not isinstance(v, LeadState)]:
        raw = store.pop(key)
        if not raw:  # tombstones (end markers, evicted leads) leave nothing behind
            continue
        if isinstance(key, bytes) and key.startswith(DEAD_MARK):
            topic, _, partition = key[len(DEAD_MARK) :].decode().rpartition(":")
            marks[(topic, int(partition))] = int(raw)
            continue
        lead = LeadState.loads(raw)
        store[lead.lead_id] = lead
    return marks
