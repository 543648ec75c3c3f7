"""Where the engine keeps its leads: a mapping by lead id, and the few whole scans a
worker needs (a rebuild, the eviction scan, a rebalance) as iterators, so that a store
holding only its hot leads in memory (``state.lead_cache``) never has to hold all of them.

Values are ``LeadState``s, and, between a recovery and its decoding, the changelog records
it read (bytes by bytes key: ``raw_records``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Container, Iterator, MutableMapping
from typing import Any

from streamproc.engine.lead import LeadState

__all__ = ["LeadStore", "MemoryLeads", "drop_leads_outside"]


def drop_leads_outside(data: dict[Any, Any], partitions: Container[int]) -> list[str]:
    """Remove from ``data`` the leads of partitions other than ``partitions``; their ids."""
    gone = [
        key
        for key, lead in data.items()
        if isinstance(lead, LeadState) and lead.partition not in partitions
    ]
    for key in gone:
        del data[key]
    return gone


class LeadStore(MutableMapping[Any, Any]):
    """The engine's leads by id."""

    @abstractmethod
    def scan(self, partitions: Container[int]) -> Iterator[LeadState]:
        """Every lead of ``partitions``, each read once (none kept in memory for it)."""

    @abstractmethod
    def peek(self, lead_id: str) -> LeadState | None:
        """The lead, without keeping it in memory for this read."""

    @abstractmethod
    def activity(self) -> Iterator[tuple[str, float]]:
        """(lead id, event time of its latest event) of every lead: the eviction scan."""

    @abstractmethod
    def keep_only(self, partitions: Container[int]) -> list[str]:
        """Drop the leads of the other partitions from memory (a rebalance moved them);
        returns their ids."""

    @abstractmethod
    def raw_records(self) -> list[Any]:
        """The keys whose values are still changelog bytes (a recovery's, to decode)."""


class MemoryLeads(LeadStore):
    """Every lead in a dict (the engine's tests and in-process benchmarks)."""

    def __init__(self, data: dict[Any, Any] | None = None) -> None:
        self.data: dict[Any, Any] = {} if data is None else data

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def peek(self, lead_id: str) -> LeadState | None:
        lead = self.data.get(lead_id)
        return lead if isinstance(lead, LeadState) else None

    def scan(self, partitions: Container[int]) -> Iterator[LeadState]:
        for lead in list(self.data.values()):
            if isinstance(lead, LeadState) and lead.partition in partitions:
                yield lead

    def activity(self) -> Iterator[tuple[str, float]]:
        # A copy: the caller lets batches run between its slices of this scan.
        for lead in list(self.data.values()):
            if isinstance(lead, LeadState):
                yield lead.lead_id, lead.last_ts

    def keep_only(self, partitions: Container[int]) -> list[str]:
        return drop_leads_outside(self.data, partitions)

    def raw_records(self) -> list[Any]:
        return [key for key, value in self.data.items() if not isinstance(value, LeadState)]
