"""The leads' changelog: the only durable state, written so that no offset outruns it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, MutableMapping
from typing import Any

import faust

from streamproc.lead import LeadState

__all__ = ["END_MARKER", "LeadLog", "decode_recovered"]

END_MARKER = b"\x00streamproc-end-marker"
DEAD_MARK = b"\x00dead-lettered\x00"  # + "topic:partition" -> highest offset dead-lettered


class LeadLog:
    """Writes lead states to the table's changelog and awaits their delivery."""

    def __init__(self, table: faust.Table) -> None:
        self.table = table
        # The batch handler and the alert timer both write: a send can wait inside the
        # producer, so without this an older snapshot could be appended after a newer one.
        self._enqueue = asyncio.Lock()

    async def write(
        self, leads: Iterable[LeadState], dead_marks: dict[tuple[str, int], int] | None = None
    ) -> None:
        """Changelog the leads and await delivery: the batch is acked only after this, so an
        offset is never committed ahead of the state it produced (Faust's own buffer flush
        may give up after 0.1 s and commit anyway). ``dead_marks``: offsets already
        dead-lettered, kept in the same partition as the leads of their source partition."""
        extra = [
            (DEAD_MARK + f"{topic}:{partition}".encode(), str(offset).encode(), partition)
            for (topic, partition), offset in (dead_marks or {}).items()
        ]
        await self._send(list(leads), tombstone=False, extra=extra)

    async def forget(self, leads: Iterable[LeadState]) -> None:
        """Tombstones: the next owner recovers nothing for these leads."""
        await self._send(list(leads), tombstone=True)

    async def _send(
        self,
        leads: list[LeadState],
        tombstone: bool,
        extra: list[tuple[bytes, bytes, int]] | None = None,
    ) -> None:
        records = [(lead.lead_id.encode(), lead, lead.partition) for lead in leads] + [
            (key, value, partition) for key, value, partition in extra or []
        ]
        if not records:
            return
        changelog = self.table.changelog_topic
        async with self._enqueue:  # snapshot and append in one order
            pending = [
                await changelog.send(key=key, value=_value(item, tombstone), partition=partition)
                for key, item, partition in records
            ]
        await asyncio.gather(*pending)
        await self._end_marker({partition for _, _, partition in records})

    async def _end_marker(self, partitions: set[int]) -> None:
        """A one-record batch after each write burst, so that recovery reads the whole burst.

        tansu answers "latest offset" with the base offset of the last record batch plus one,
        so a recovering worker stops before the rest of a multi-record batch. A trailing
        single-record batch (a tombstone for a key no lead has) makes that answer exact.
        """
        changelog = self.table.changelog_topic
        markers = [
            await changelog.send(key=END_MARKER, value=None, partition=p) for p in partitions
        ]
        await asyncio.gather(*markers)


def _value(item: LeadState | bytes, tombstone: bool) -> bytes | None:
    if isinstance(item, LeadState):
        return None if tombstone else item.dumps()
    return item


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
