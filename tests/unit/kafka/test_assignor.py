"""BalancedAssignor: a worker joining two that hold all the partitions gets its share,
with standby replicas on (Faust's own assignor gave it nothing)."""

from __future__ import annotations

from faust.assignor.client_assignment import CopartitionedAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor

from streamproc.kafka.assignor import BalancedAssignor


def _cluster() -> dict[str, CopartitionedAssignment]:
    # Before the join: w1 and w2 hold 2 of 4 partitions each, and each other's standbys.
    return {
        "w1": CopartitionedAssignment(actives={1, 3}, standbys={0, 2}, topics={"t"}),
        "w2": CopartitionedAssignment(actives={0, 2}, standbys={1, 3}, topics={"t"}),
        "w3": CopartitionedAssignment(topics={"t"}),
    }


def _assign(cls: type[CopartitionedAssignor]) -> dict[str, CopartitionedAssignment]:
    return dict(cls({"t"}, _cluster(), num_partitions=4, replicas=1).get_assignment())


def test_faust_alone_leaves_the_joining_worker_idle() -> None:
    assert _assign(CopartitionedAssignor)["w3"].actives == set()  # why BalancedAssignor


def test_the_joining_worker_gets_its_share() -> None:
    result = _assign(BalancedAssignor)
    actives = [result[w].actives for w in ("w1", "w2", "w3")]
    assert sorted(len(a) for a in actives) == [1, 1, 2]
    assert set().union(*actives) == {0, 1, 2, 3}  # each partition active once
    for w in ("w1", "w2", "w3"):
        assert result[w].actives.isdisjoint(result[w].standbys)
    standbys = [p for w in ("w1", "w2", "w3") for p in result[w].standbys]
    assert sorted(standbys) == [0, 1, 2, 3]  # one standby per partition
    # Sticky: the workers that stay keep one of their partitions each.
    assert result["w1"].actives & {1, 3} and result["w2"].actives & {0, 2}
