"""Errors a user can cause, as the terminal shows them: one line saying what happened and
what to do, and the exit code (2). The busy port is in test_worker_contract and test_demo,
the missing replay file in tests/unit/tools/test_replay.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamproc.tools.net import free_port

pytestmark = pytest.mark.integration


def _streamproc(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["topics", "create"],
        ["simulate", "--duration", "1"],
        ["targets", "list"],  # these three printed aiokafka's traceback
        ["targets", "set", "--measure", "deals_won", "--period", "month", "5"],
        ["targets", "delete", "--measure", "deals_won", "--period", "month"],
    ],
)
def test_no_broker_one_warning_then_one_line_naming_it_and_what_to_check(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"kafka://127.0.0.1:{free_port()}"
    result = _streamproc(*command, "--wait", "2", env={"STREAMPROC_BROKER_URL": url}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"streamproc: broker {url} not reachable after 2s (connection refused): "
        "is it running, and does STREAMPROC_BROKER_URL point at it?"
    )
    # aiokafka's ERROR per attempt (every 0.5 s) is not shown: our one warning is
    assert not [line for line in lines if "ERROR" in line or "Traceback" in line], lines
    assert len(lines) == 2 and "WARNING" in lines[0] and url in lines[0]


def test_a_bad_key_in_a_json_setting_is_named_with_its_variable(tmp_path: Path) -> None:
    hours = '{"*": {"days": "mon-fri", "opne": "09:00"}}'
    result = _streamproc("topics", "create", env={"STREAMPROC_BUSINESS_HOURS": hours}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "streamproc: bad setting STREAMPROC_BUSINESS_HOURS: unknown key 'opne' under '*' "
        "(the keys: days, open, close, timezone, holidays)"
    ]
