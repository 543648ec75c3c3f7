"""The freshness probe reads which probe each series shows, and the lag of each probe."""

from __future__ import annotations

from benchmarks.freshness import FRESH_REP, lags, probes_shown


def _metrics(count: int, ratio: float, median: float, window: str = "1h") -> bytes:
    labels = f'channel="call",rep="{FRESH_REP}",window="{window}"'
    return (
        f"sales_contact_attempts{{{labels}}} {count}\n"
        f"sales_connect_ratio{{{labels}}} {ratio}\n"
        f'sales_response_time_seconds{{quantile="0.5",rep="{FRESH_REP}",window="{window}"}} '
        f"{median}\n"
        f'sales_response_time_seconds{{quantile="0.9",rep="{FRESH_REP}",window="{window}"}} 99\n'
        f'sales_contact_attempts{{channel="call",rep="someone",window="1h"}} 40\n'
    ).encode()


def test_each_series_says_which_probe_it_has_reached() -> None:
    # After 7 probes: 7 attempts, 6 of 7 connected, the median of 1..7 s is 4 s.
    assert probes_shown(_metrics(7, 6 / 7, 4.0)) == (7, 7, 7)
    # The ratio and the quantile still at probe 5: (4/5, 3 s).
    assert probes_shown(_metrics(7, 0.8, 3.0)) == (7, 5, 5)
    assert probes_shown(_metrics(1, 0.0, 1.0)) == (1, 1, 1)
    assert probes_shown(_metrics(7, 6 / 7, 4.0, window="7d")) == (0, 0, 0)  # 1h only
    assert probes_shown(b"") == (0, 0, 0)


def test_the_lag_of_a_probe_runs_from_its_count_to_its_whole_series() -> None:
    seen = [  # (scrape start, count, ratio, quantile)
        (100.0, 1, 0, 0),
        (101.0, 2, 1, 0),
        (102.0, 3, 3, 0),
        (103.0, 4, 3, 1),
    ]
    ratio, ratio_missing = lags(seen, 2)
    assert sorted(ratio) == [0.0, 1.0, 1.0] and ratio_missing == 1  # probe 4 never reached
    quantile, quantile_missing = lags(seen, 3)
    assert quantile == [3.0] and quantile_missing == 3
