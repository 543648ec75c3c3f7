"""``streamproc demo`` as a user runs it: KPIs on /metrics within a minute, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from streamproc.tools.net import free_port, port_open
from tests.support.harness import parse_samples, wait_until

pytestmark = pytest.mark.integration


def _processes_with(marker: str) -> list[int]:
    """Pids whose environment carries ``marker`` (the demo's web port setting)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _by(samples: dict, name: str, label: str) -> dict[str, list[float]]:  # type: ignore[type-arg]
    """Values of metric ``name`` grouped by one label's value."""
    out: dict[str, list[float]] = {}
    for (metric, labels), value in samples.items():
        if metric == name:
            out.setdefault(dict(labels).get(label, ""), []).append(value)
    return out


def _assert_a_real_sales_floor(samples: dict) -> None:  # type: ignore[type-arg]
    """What a sales manager sees on first open: ranges a real team has (the demo used to
    show every won deal under source="unknown", open ratios of 0.04 and conversions of 1)."""
    won = _by(samples, "sales_deals_won", "source")
    assert sum(sum(v) for v in won.values()) >= 20, won
    assert "unknown" not in won, f"won deals without a source: {won['unknown']}"
    assert len(won) >= 4, "deals won from several sources"
    opens = [v for v in _by(samples, "sales_email_open_ratio", "window").get("today", [])]
    assert len(opens) >= 4 and all(0.1 < v < 0.9 for v in opens), opens
    conversions = _by(samples, "sales_stage_conversion_ratio", "window")["today"]
    assert all(0 < v <= 1 for v in conversions) and min(conversions) < 0.9, conversions
    win = _by(samples, "sales_win_ratio", "window")["7d"]
    assert all(0 < v < 1 for v in win), win
    targets = _by(samples, "sales_activity_target_ratio", "rep")
    assert len(targets) == 8, "a target per rep: the leaderboard is not empty"
    assert all(0.05 < v[0] < 3 for v in targets.values()), targets
    waiting = sum(sum(v) for v in _by(samples, "sales_leads_awaiting_contact", "rep").values())
    assert 5 <= waiting <= 400, waiting


def test_demo_starts_from_a_plausible_history_goes_live_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    port = free_port()
    marker = f"STREAMPROC_WEB_PORT={port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env["STREAMPROC_WEB_PORT"] = str(port)
    env["TMPDIR"] = str(tmp_path)
    out = (tmp_path / "demo.out").open("wb")
    demo = subprocess.Popen(
        # 20 days of history (the default 62 takes twice as long, with the same shape): last
        # month has values too, except on the first days of a month
        [sys.executable, "-m", "streamproc", "demo", "--history-days", "20"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: metrics in (tmp_path / "demo.out").read_text(), timeout=90)
        with urllib.request.urlopen(metrics, timeout=5) as r:
            first_look = parse_samples(r.read().decode())
        _assert_a_real_sales_floor(first_look)

        def read(samples: dict) -> float:  # type: ignore[type-arg]
            return sum(sum(v) for v in _by(samples, "streamproc_events_total", "topic").values())

        def live() -> bool:  # the team goes on after its history: the worker reads more
            with urllib.request.urlopen(metrics, timeout=5) as r:
                now = parse_samples(r.read().decode())
            return read(now) > read(first_look) + 20

        wait_until(live, timeout=30, interval=1.0)
        with urllib.request.urlopen(metrics, timeout=5) as r:
            _assert_a_real_sales_floor(parse_samples(r.read().decode()))  # live, still so
        text = (tmp_path / "demo.out").read_text()
        assert "history read [" in text and "100%" in text, "a progress bar for the history"
        assert _processes_with(marker), "the worker runs"
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
        out.close()
    assert "leads waiting" in (tmp_path / "demo.out").read_text()
    wait_until(lambda: not _processes_with(marker), timeout=10)
    assert not port_open("127.0.0.1", port)
    assert not list(tmp_path.glob("streamproc-demo-*")), "a clean stop leaves no temp dir"


def test_demo_on_a_busy_port_says_so_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env.update(STREAMPROC_WEB_PORT=str(port), TMPDIR=str(tmp_path))
        result = subprocess.run(
            [sys.executable, "-m", "streamproc", "demo"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        f"streamproc: the web port 127.0.0.1:{port} is already in use: stop what listens there "
        f"or set STREAMPROC_WEB_PORT to a free port (e.g. STREAMPROC_WEB_PORT={port + 1})"
    ]
    assert not list(tmp_path.glob("streamproc-demo-*"))
