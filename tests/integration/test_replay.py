"""``streamproc replay`` into a real broker: the worker counts exactly the good lines."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamproc.config import Settings, child_env
from streamproc.tools.sales_team import history
from tests.support.harness import WorkerProcess, wait_until

pytestmark = pytest.mark.integration


def _counts(worker: WorkerProcess) -> dict[str, float]:
    """streamproc_events_total by outcome."""
    out: Counter[str] = Counter()
    for (name, labels), value in worker.samples().items():
        if name == "streamproc_events_total":
            out[dict(labels)["outcome"]] += value
    return dict(out)


def test_replay_into_a_worker(
    settings_factory: Callable[..., Settings],
    make_topics: Callable[[Settings], None],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = settings_factory()
    make_topics(settings)
    events = list(history(settings, 400, 40, 2 * 86400.0, reps=4, seed=7))
    lines = [orjson.dumps({"type": kind, "event": event}) for kind, event in events[:300]]
    # The flat form for the rest, and two bad lines in the middle.
    lines += [orjson.dumps({"kind": kind, **event}) for kind, event in events[300:]]
    lines.insert(10, b'{"type": "lead-created", "event": {"lead_id": "L-x"}}')
    lines.insert(200, b"not json at all")
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    done = subprocess.run(
        [sys.executable, "-m", "streamproc", "replay", str(path)],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # some lines were bad: 1, the good ones sent
    assert f"{path}:11: missing field event_id" in done.stderr
    assert f"{path}:201: not JSON" in done.stderr
    assert "402 lines, 400 events sent" in done.stderr
    assert "2 bad" in done.stderr

    worker = worker_factory(settings)
    counts = wait_until(lambda: (c := _counts(worker)) and sum(c.values()) >= 400 and c, timeout=60)
    assert counts == {"processed": 400.0}  # every good line, once; the bad ones never sent
    created = sum(1 for kind, _ in events if kind == "lead-created")
    leads = sum(
        value
        for (name, labels), value in worker.samples().items()
        if name == "sales_leads_created" and dict(labels).get("window") == "7d"
    )
    assert leads == created


def test_replay_refuses_missing_topics(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Producing to a missing topic would create it with the broker's default count."""
    settings = settings_factory()
    path = tmp_path / "one.jsonl"
    event = next(iter(history(settings, 1, 1, 3600.0)))
    path.write_bytes(orjson.dumps({"type": event[0], "event": event[1]}) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "streamproc", "replay", "--no-progress", str(path)],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "missing input topics" in done.stderr
