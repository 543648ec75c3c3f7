"""The SLA-watch timer under a shutdown: a stopped producer ends the round, not the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.exceptions import NotReady

from streamproc.config import Settings
from streamproc.topology import Topology


async def test_a_producer_stopped_under_an_alert_round_does_not_crash_the_timer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    topology.ready = True
    calls = []

    async def stopped_producer(leads: object, now: float) -> None:
        calls.append(now)
        raise NotReady("Producer service not yet started")

    topology.alerts.publish_due = stopped_producer  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="streamproc.topology"):
        await topology._check_alerts()  # a timer exception would stop the worker
    assert calls, "the round did not run"
    assert "producer has stopped" in caplog.text
    assert not topology._state_lock.locked()

    async def broken(leads: object, now: float) -> None:
        raise RuntimeError("a bug")

    topology.alerts.publish_due = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await topology._check_alerts()  # anything else still surfaces
