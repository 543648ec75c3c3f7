"""A tiny ``python -m benchmarks``: every contender runs and the JSON line has every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

KEYS = {
    "events_per_s",
    "events_per_s_2_workers",
    "naive_faust_events_per_s",
    "plain_faust_events_per_s",
    "raw_consumer_events_per_s",
    "p50_latency_ms",
    "p99_latency_ms",
    "alert_latency_ms",
    "rss_mb",
    "n_events",
    "durations",
}


def test_tiny_bench_prints_all_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    # The bench is the ``benchmarks`` package of the source tree, run from its root.
    root = Path(__file__).resolve().parents[2]
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--events", "5000", "--leads", "500"]
    argv += ["--reps", "8", "--time-bound", "8", "--latency-seconds", "4", "--latency-rate", "200"]
    argv += ["--alert-probes", "2", "--alert-wait", "3", "--workdir", str(tmp_path / "bench")]
    argv += ["--freshness-seconds", "4"]
    argv += ["--takeover-leads", "0"]  # tests/benchmarks/test_takeover.py runs that part
    # A guard against a hang only: 72 s on an idle machine, 121 s on a slow CI runner. How
    # long the suite takes is CI's to watch, not an assertion's (machines vary 2-3x).
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=300, check=False, cwd=root
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures.keys() >= KEYS
    assert figures["n_events"] == 5000
    for key in KEYS - {"alert_latency_ms", "n_events", "durations"}:
        assert isinstance(figures[key], float | int) and figures[key] > 0, (key, figures)
    # The probes' SLA breaches were all alerted, after they were due and within the goal.
    assert figures["alerts_seen"] == figures["alert_probes"] == 2, figures
    assert 0 < figures["alert_latency_ms"] <= 1000, figures
    assert figures["goals"]["alert <= 1 s"] is True, figures["goals"]
    assert figures["latency_markers"] > 0
    assert set(figures["reached"]) == {"raw", "plain", "naive", "kpi2", "kpi1"}
    # Every probe's ratio and quantile reached /metrics, within the goal's 10 s.
    assert figures["freshness_probes"] >= 3 and figures["freshness_unreached"] == 0, figures
    assert 0 <= figures["freshness_max_lag_s"] <= 10, figures
    assert figures["goals"]["ratios, quantiles <= 10 s behind counts"] is True, figures["goals"]
    assert "KPI topology, 1 worker" in done.stdout  # the table came before the JSON line
