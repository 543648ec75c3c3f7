"""``streamproc demo`` as a user runs it: KPIs on /metrics within a minute, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


def test_demo_shows_contact_attempts_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    marker = f"STREAMPROC_WEB_PORT={port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env["STREAMPROC_WEB_PORT"] = str(port)
    env["TMPDIR"] = str(tmp_path)
    out = (tmp_path / "demo.out").open("wb")
    demo = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "demo", "--rate", "40"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:

        def attempts() -> float:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
                samples = parse_samples(r.read().decode())
            return sum(v for (name, _), v in samples.items() if name == "sales_contact_attempts")

        assert wait_until(attempts, timeout=60, interval=1.0) > 0
        text = (tmp_path / "demo.out").read_text()
        assert f"http://127.0.0.1:{port}/metrics" in text
        assert len(_processes_with(marker)) >= 2  # the worker and the simulator
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
