"""The delivery cursor: what the fetch loop hands to the streams around seeks."""

from __future__ import annotations

from faust.types import TP

from streamproc.kafka.delivery import DeliveryCursor, Verdict

TP0 = TP("sales.lead-created", 0)


def _sought(offset: int) -> DeliveryCursor:
    cursor = DeliveryCursor()
    cursor.seeking()
    cursor.sought({TP0: offset})
    return cursor


def test_an_unknown_partition_delivers_anything() -> None:
    assert DeliveryCursor().judge(TP0, 42, seeks_at_fetch=0) is Verdict.DELIVER


def test_messages_in_order_are_delivered_and_repeats_skipped() -> None:
    cursor = _sought(10)
    fetched_at = cursor.seeks
    for offset in range(10, 13):
        assert cursor.judge(TP0, offset, fetched_at) is Verdict.DELIVER
        cursor.delivered(TP0, offset, seeks_before=cursor.seeks)
    assert cursor.next(TP0) == 13
    assert cursor.judge(TP0, 11, fetched_at) is Verdict.REPEAT
    assert cursor.judge(TP0, 9, fetched_at) is Verdict.REPEAT  # below the seek's target


def test_a_jump_is_a_gap_in_the_log_only_if_it_comes_again_after_seeking_back() -> None:
    cursor = _sought(10)
    assert cursor.judge(TP0, 14, seeks_at_fetch=cursor.seeks) is Verdict.JUMP
    cursor.seeking()  # the fetch loop seeks back to 10
    cursor.sought({TP0: 10})
    assert cursor.judge(TP0, 14, seeks_at_fetch=cursor.seeks) is Verdict.GAP


def test_a_jump_that_does_not_come_again_is_not_a_gap() -> None:
    cursor = _sought(10)
    assert cursor.judge(TP0, 320, seeks_at_fetch=cursor.seeks) is Verdict.JUMP
    cursor.seeking()
    cursor.sought({TP0: 10})
    assert cursor.judge(TP0, 10, seeks_at_fetch=cursor.seeks) is Verdict.DELIVER
    cursor.delivered(TP0, 10, seeks_before=cursor.seeks)
    assert cursor.judge(TP0, 320, seeks_at_fetch=cursor.seeks) is Verdict.JUMP


def test_a_jump_in_a_batch_fetched_before_a_seek_is_stale() -> None:
    cursor = _sought(20)
    fetched_at = cursor.seeks
    cursor.seeking()
    cursor.sought({TP0: 10})  # a rebalance seeks back to the committed offset
    assert cursor.judge(TP0, 25, fetched_at) is Verdict.STALE
    assert cursor.judge(TP0, 10, fetched_at) is Verdict.DELIVER  # the same record either way
    assert cursor.next(TP0) == 10


def test_a_delivery_straddling_a_seek_leaves_the_seek_target() -> None:
    cursor = _sought(10)
    before = cursor.seeks
    cursor.seeking()
    cursor.sought({TP0: 8})
    cursor.delivered(TP0, 12, seeks_before=before)
    assert cursor.next(TP0) == 8, "8-11 would be skipped as already read"


def test_a_revoked_partition_is_forgotten() -> None:
    cursor = _sought(10)
    cursor.forget([TP0])
    assert cursor.next(TP0) is None


def test_a_delivery_that_began_between_the_seek_and_its_target_does_not_move_past_it() -> None:
    """Seen in the join/leave scenario: a delivery began after the seek was announced and
    completed after its target was set; it moved the next offset from 763 to 1511, and the
    records read again from 763 were never delivered."""
    cursor = _sought(700)
    cursor.seeking()
    before = cursor.seeks  # the delivery begins while the seek is under way
    cursor.sought({TP0: 763})
    cursor.delivered(TP0, 1510, seeks_before=before)
    assert cursor.next(TP0) == 763
