"""Targets: the messages refused and applied, and attainment and forecast coverage computed
by hand on the scenario of tests/support/scenario.py."""

from __future__ import annotations

import math
import re

import orjson
import pytest

from streamproc.config import Settings
from streamproc.contract.targets import encode_target, parse_target, target_key
from streamproc.exceptions import InvalidEvent
from streamproc.tools.targets import plausible_targets
from tests.support.scenario import Scenario, noon_zone
from tests.support.truth import Truth, engine_samples

SCENARIO = Scenario()


def test_a_target_message_sets_or_removes_one_target() -> None:
    key = target_key("revenue_won", "month", "r1")
    assert key == b"revenue_won:month:r1"
    assert parse_target(key, encode_target("revenue_won", "month", "r1", 5e4)) == (
        ("revenue_won", "month", "r1"),
        50000.0,
    )
    team = target_key("deals_won", "quarter", None)
    assert team == b"deals_won:quarter:*"
    assert parse_target(team, encode_target("deals_won", "quarter", None, 12)) == (
        ("deals_won", "quarter", ""),
        12.0,
    )
    assert parse_target(team, None) == (("deals_won", "quarter", ""), None)  # a tombstone
    assert parse_target(team, encode_target("deals_won", "quarter", None, None))[1] is None


def test_a_rep_id_with_a_colon_can_have_a_target() -> None:
    # events.md allows any rep_id of 1-128 chars; the key's first two colons end measure
    # and period, so "eu:rep-7" was refused as a key that "is not <measure>:<period>:<rep>"
    key = target_key("revenue_won", "month", "eu:rep-7")
    assert key == b"revenue_won:month:eu:rep-7"
    assert parse_target(key, encode_target("revenue_won", "month", "eu:rep-7", 9)) == (
        ("revenue_won", "month", "eu:rep-7"),
        9.0,
    )
    assert parse_target(key, None) == (("revenue_won", "month", "eu:rep-7"), None)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"revenue_won:month", b"", "is not <measure>:<period>:<rep or *>"),
        (b"calls:month:*", b"", "unknown measure 'calls'"),
        (b"deals_won:week:*", b"", "unknown period 'week'"),
        (b"deals_won:month:*", b"{", "value is not JSON"),
        (b"deals_won:month:*", b"[1]", 'value must be {"measure", "period", "rep", "value"}'),
        (
            b"deals_won:month:*",
            encode_target("deals_won", "month", "r1", 3),
            "the value names another target than its key",
        ),
        (
            b"deals_won:month:*",
            orjson.dumps({"measure": "deals_won", "period": "month", "rep": None, "value": -1}),
            "positive",
        ),
        (
            b"deals_won:month:*",
            orjson.dumps({"measure": "deals_won", "period": "month", "rep": None, "value": "3"}),
            "a number or null",
        ),
    ],
)
def test_a_bad_target_message_is_refused_with_its_reason(
    key: bytes, value: bytes, reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(reason)):
        parse_target(key, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("1e400")])
def test_a_non_finite_target_is_refused_not_encoded_as_a_removal(value: float) -> None:
    # JSON has no NaN or infinity: once written as null, which removes the target
    with pytest.raises(InvalidEvent, match="a target must be a positive number"):
        encode_target("deals_won", "month", None, value)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_a_non_finite_value_on_the_topic_is_refused_not_read_as_a_removal(number: bytes) -> None:
    value = b'{"measure": "deals_won", "period": "month", "rep": null, "value": %s}' % number
    with pytest.raises(InvalidEvent):
        parse_target(b"deals_won:month:*", value)


def test_attainment_and_coverage_by_hand() -> None:
    settings = Settings(
        _env_file=None, timezone=noon_zone(SCENARIO.now), activity_targets={"r1": 10}
    )
    truth = Truth(settings)
    now = SCENARIO.now + 1
    truth.feed(SCENARIO.events, now)
    on_topic = {
        ("revenue_won", "month", "r2"): 26000.0,
        ("revenue_won", "month", "r1"): 100000.0,
        ("revenue_won", "quarter", ""): 50000.0,
        ("deals_won", "month", ""): 4.0,
        ("leads_created", "day", ""): 20.0,
        ("new_customers", "month", "r2"): 2.0,
        ("contact_attempts", "day", "r1"): 5.0,  # over STREAMPROC_ACTIVITY_TARGETS' 10
    }
    got = {
        (s.metric, tuple(sorted(s.labels.items()))): s.value
        for s in engine_samples(truth.engine, now, on_topic=on_topic)
        if s.metric in ("sales_target_attainment_ratio", "sales_forecast_coverage_ratio",
                        "sales_target", "sales_activity_target_ratio")
    }  # fmt: skip

    def attained(measure: str, period: str, rep: str | None) -> float:
        labels = {"measure": measure, "period": period, **({"rep": rep} if rep else {})}
        return got[("sales_target_attainment_ratio", tuple(sorted(labels.items())))]

    # every event but L9's and L10's is of the last 50 minutes: today, this month, quarter
    assert attained("revenue_won", "month", "r2") == 0.5  # L3 5,000 + L4 8,000 / 26,000
    assert attained("revenue_won", "month", "r1") == 0.0  # r1 won nothing
    assert attained("revenue_won", "quarter", None) == 0.26  # 13,000 / 50,000
    assert attained("deals_won", "month", None) == 0.5  # L3, L4 / 4
    assert attained("leads_created", "day", None) == 0.4  # L1 - L8 today / 20
    assert attained("new_customers", "month", "r2") == 0.5  # L3 (L4 was a customer) / 2
    assert attained("contact_attempts", "day", "r1") == 0.6  # L1, L2, L5 today / 5
    assert got[("sales_activity_target_ratio", (("rep", "r1"),))] == 0.6
    coverage = {
        tuple(sorted(dict(labels).items())): value
        for (metric, labels), value in got.items()
        if metric == "sales_forecast_coverage_ratio"
    }
    assert coverage == {
        (("period", "month"), ("rep", "r1")): 0.31947,  # (0 + 27,600 x .12 + 34,500 x .83) / 1e5
        (("period", "month"), ("rep", "r2")): 0.5,  # (13,000 + no open deal) / 26,000
        # (13,000 + 31,947 + L10's 1,000 x .5) / 50,000
        (("period", "quarter"),): 0.90894,
    }
    targets = {labels: v for (metric, labels), v in got.items() if metric == "sales_target"}
    assert len(targets) == len(on_topic)  # the topic's daily r1 target replaced the default
    assert targets[(("measure", "contact_attempts"), ("period", "day"), ("rep", "r1"))] == 5.0


def test_the_simulators_targets_are_valid_and_scale_with_the_team() -> None:
    targets = plausible_targets([f"rep-{i}" for i in range(4)], leads_per_second=0.01)
    for measure, period, rep, value in targets:
        assert parse_target(
            target_key(measure, period, rep), encode_target(measure, period, rep, value)
        )
    by = {(m, p, r): v for m, p, r, v in targets}
    # 0.01 leads/s: 864 a day; 2 attempts each, over 4 reps: 432
    assert by[("leads_created", "day", None)] == 860.0
    assert by[("contact_attempts", "day", "rep-0")] == 430.0
    assert by[("revenue_won", "year", None)] > by[("revenue_won", "quarter", None)]
