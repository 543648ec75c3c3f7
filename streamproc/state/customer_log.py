"""The customers' changelog: written, like the leads', before their input is acked."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from streamproc.engine.customer import CustomerState
from streamproc.kafka.app import Table
from streamproc.state.changelog import ChangelogWriter, Record

__all__ = ["CustomerLog", "decode_recovered_customers"]


class CustomerLog:
    """Writes customer states to their table's changelog and awaits their delivery."""

    def __init__(self, table: Table) -> None:
        self.writer = ChangelogWriter(table)

    async def write(
        self, customers: Iterable[CustomerState], forgotten: Iterable[CustomerState] = ()
    ) -> None:
        """The states, and a tombstone for each customer forgotten."""
        # The states themselves: each is serialized when its turn comes (ChangelogWriter).
        records: list[Record] = [
            (customer.customer_id.encode(), customer, customer.partition) for customer in customers
        ]
        records += [(c.customer_id.encode(), None, c.partition) for c in forgotten]
        await self.writer.write(records)


def decode_recovered_customers(store: MutableMapping[Any, Any]) -> int:
    """Recovery fills the store with changelog bytes: turn them into customer states once;
    returns how many."""
    decoded = 0
    for key in [k for k, v in store.items() if not isinstance(v, CustomerState)]:
        raw = store.pop(key)
        if not raw:  # tombstones and end markers leave nothing behind
            continue
        customer = CustomerState.loads(raw)
        store[customer.customer_id] = customer
        decoded += 1
    return decoded
