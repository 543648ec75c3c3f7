"""The periods part of the bench: its goals compare a year of history with its last 7
days alone, at the goal's size only."""

from __future__ import annotations

import pytest

from benchmarks.options import GOALS, BenchOptions


def test_the_periods_goals_allow_ten_percent_at_100000_leads() -> None:
    rss = GOALS["periods: RSS within 10 % of 7 days"]
    at = {"periods_leads": 100_000, "periods_7d_rss_mb": 200.0}
    assert rss(at | {"periods_rss_mb": 220.0})
    assert not rss(at | {"periods_rss_mb": 221.0})
    takeover = GOALS["periods: take-over within 10 % of 7 days"]
    at = {"periods_leads": 100_000, "periods_7d_takeover_s": 4.0}
    assert takeover(at | {"periods_takeover_s": 4.4})
    assert not takeover(at | {"periods_takeover_s": 4.5})
    with pytest.raises(KeyError):  # n/a: measured on 10,000 leads
        takeover({"periods_leads": 10_000, "periods_takeover_s": 1.0, "periods_7d_takeover_s": 1})


def test_the_quick_preset_skips_the_year() -> None:
    assert BenchOptions.quick_preset().periods_leads == 0
    assert BenchOptions().periods_leads == 100_000
