"""The leads' changelog: the only durable state, written so that no offset outruns it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, MutableMapping
from typing import Any

import faust

from streamproc.lead import LeadState

__all__ = ["END_MARKER", "LeadLog", "decode_recovered"]

END_MARKER = b"\x00streamproc-end-marker"


class LeadLog:
    """Writes lead states to the table's changelog and awaits their delivery."""

    def __init__(self, table: faust.Table) -> None:
        self.table = table
        # The batch handler and the alert timer both write: a send can wait inside the
        # producer, so without this an older snapshot could be appended after a newer one.
        self._enqueue = asyncio.Lock()

    async def write(self, leads: Iterable[LeadState]) -> None:
        """Changelog the leads and await delivery: the batch is acked only after this, so an
        offset is never committed ahead of the state it produced (Faust's own buffer flush
        may give up after 0.1 s and commit anyway)."""
        await self._send(list(leads), tombstone=False)

    async def forget(self, leads: Iterable[LeadState]) -> None:
        """Tombstones: the next owner recovers nothing for these leads."""
        await self._send(list(leads), tombstone=True)

    async def _send(self, leads: list[LeadState], tombstone: bool) -> None:
        if not leads:
            return
        changelog = self.table.changelog_topic
        async with self._enqueue:  # snapshot and append in one order
            pending = [
                await changelog.send(
                    key=lead.lead_id.encode(),
                    value=None if tombstone else lead.dumps(),
                    partition=lead.partition,
                )
                for lead in leads
            ]
        await asyncio.gather(*pending)
        await self._end_marker({lead.partition for lead in leads})

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


def decode_recovered(store: MutableMapping[Any, Any]) -> None:
    """Recovery fills the store with changelog bytes: turn them into lead states once."""
    for key in [k for k, v in store.items() if not isinstance(v, LeadState)]:
        raw = store.pop(key)
        if raw:  # tombstones (end markers, evicted leads) leave nothing behind
            lead = LeadState.loads(raw)
            store[lead.lead_id] = lead
