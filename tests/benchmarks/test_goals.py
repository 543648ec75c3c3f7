"""The bench's goal checks read the figures in the goals' own units."""

from __future__ import annotations

from benchmarks.options import GOALS


def test_the_memory_goal_is_300_megabytes_of_the_mebibytes_measured() -> None:
    rss = GOALS["RSS <= 300 MB"]
    assert rss({"rss_mb": 286.0}), "286.0 MiB is 299.9 MB"
    assert not rss({"rss_mb": 290.0}), "290 MiB is 304.1 MB"
