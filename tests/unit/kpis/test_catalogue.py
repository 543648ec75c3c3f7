"""The catalogue: rows that can be computed, and routing that follows from them."""

from __future__ import annotations

import time

import pytest

from streamproc.config import Settings
from streamproc.engine.facts import FAMILIES
from streamproc.kpis import catalogue
from streamproc.kpis.catalogue import (
    CATALOGUE,
    GLOBAL,
    KPIS,
    ROUTES,
    TARGET_KINDS,
    Kind,
    Kpi,
    owner_keys,
)
from streamproc.tools.sales_team import history
from tests.support.truth import Truth


def test_names_are_unique_and_follow_the_prometheus_conventions() -> None:
    names = [kpi.name for kpi in CATALOGUE]
    assert len(names) == len(set(names)) == len(KPIS)
    for kpi in CATALOGUE:
        assert kpi.name.startswith("sales_") and not kpi.name.endswith("_total"), kpi.name
        if kpi.kind is Kind.RATIO:
            assert kpi.name.endswith("_ratio"), kpi.name


def test_every_family_a_row_reads_is_routed_to_the_rows_owner() -> None:
    for kpi in CATALOGUE:
        for family in kpi.reads:
            # a target's team totals (no rep label) go to the global owner, the team's
            team = kpi.kind in TARGET_KINDS and kpi.owner not in FAMILIES[family].labels
            assert (GLOBAL if team else kpi.owner) in ROUTES[family], (kpi.name, family)
    assert owner_keys("team_attempt", ()) == [GLOBAL]
    assert owner_keys("won_src", ("referral",)) == [GLOBAL, "source:referral"]
    assert owner_keys("attempt", ("r1", "call")) == ["rep:r1"]


def test_a_row_that_cannot_be_computed_fails_naming_itself() -> None:
    bad = [
        Kpi("sales_x", Kind.COUNT, ("nope",), ("rep",), "rep", "activity", "x"),
        Kpi("sales_x", Kind.COUNT, ("attempt",), ("stage",), "stage", "activity", "x"),
        Kpi("sales_x", Kind.COUNT, ("awaiting",), ("rep",), "rep", "activity", "x"),
        Kpi("sales_x", Kind.COUNT, ("attempt",), ("rep",), "channel", "activity", "x"),
    ]
    for row in bad:
        with pytest.raises(ValueError, match="sales_x"):
            catalogue._check(row)


def test_every_family_the_engine_derives_is_declared() -> None:
    settings = Settings(_env_file=None)
    truth = Truth(settings)
    now = time.time()
    truth.feed(history(settings, 3000, 300, 2 * 86400, reps=5, seed=3, end=now), now)
    derived: set[str] = set()
    for part in truth.engine.partitions.values():
        derived |= set(part.windowed) | set(part.live)
    assert derived, "the history derived nothing"
    assert derived <= set(FAMILIES)
