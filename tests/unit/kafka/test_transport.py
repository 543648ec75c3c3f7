"""The worker's Kafka consumer settings that Faust does not expose."""

from __future__ import annotations

from pathlib import Path

from streamproc.config import Settings
from streamproc.kafka.app import create_app
from streamproc.kafka.transport import FETCH_MAX_WAIT_MS


async def test_the_consumer_does_not_hold_fetches_for_faust_s_1500_ms(tmp_path: Path) -> None:
    """tansu answers a fetch only when its wait is over: 1,500 ms (Faust's) made events
    arrive up to 1.5 s late at a steady 1,000 events/s."""
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    assert FETCH_MAX_WAIT_MS <= 100
    assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
