"""Faust's partition assignor, made to give a joining worker its share with standbys on.

Faust keeps each worker's partitions up to the *max* capacity (ceil(partitions /
workers)) when standby replicas are on, and trims to the *min* capacity (floor) only when
they are off. With 4 partitions, two workers holding 2 each and a third joining, the third
got nothing (neither active nor standby), emptied its subscription and sat idle for good
(seen in the join-and-leave fault test). Here the trim to the min capacity applies with
standbys too; the rest is Faust's (sticky, standbys where actives are not).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from faust.assignor import partition_assignor
from faust.assignor.copartitioned_assignor import CopartitionedAssignor

__all__ = ["BalancedAssignor", "install"]


class BalancedAssignor(CopartitionedAssignor):
    def get_assignment(self) -> MutableMapping[str, Any]:
        if self.num_partitions >= self._num_clients > 0:
            for assignment in self._client_assignments.values():
                assignment.unassign_extras(self.min_capacity, self.replicas)
        result: MutableMapping[str, Any] = super().get_assignment()
        return result


def install() -> None:
    """Make Faust's ``PartitionAssignor`` use ``BalancedAssignor`` (idempotent)."""
    # The name the PartitionAssignor module looks up when it assigns a copartitioned group.
    setattr(partition_assignor, "CopartitionedAssignor", BalancedAssignor)  # noqa: B010
