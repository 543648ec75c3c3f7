"""One bench run's surroundings: the embedded broker, the settings its processes get, the
work directory, and the time each step took."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from benchmarks.options import SLA_SOURCE, BenchError, BenchOptions
from benchmarks.processes import code_version
from streamproc.config import Settings
from streamproc.kafka.topics import create_topics, topic_names
from streamproc.tools.broker import EmbeddedBroker, embedded_session
from streamproc.tools.net import free_port
from streamproc.tools.progress import Progress
from streamproc.tools.sales_team import SimEvent

__all__ = ["BenchRun", "phase", "produce_events"]


class BenchRun:
    """State of one bench run: the broker, the base settings, the work directory."""

    def __init__(
        self, settings: Settings, options: BenchOptions, out: TextIO, part: str = ""
    ) -> None:
        self.options = options
        self.out = out
        # ``part`` tells apart the runs of one bench (the take-over part has its own broker).
        self.tag = f"{part}{os.getpid():x}{int(time.time()) % 100000:x}"
        if options.workdir is not None:
            options.workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = options.workdir
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="streamproc-bench-"))
        self.broker = EmbeddedBroker(free_port(), log_path=self.workdir / "broker.log")
        self.base = settings
        self.settings = settings
        self.durations: dict[str, float] = {}
        self.version = code_version()
        self.code_changed: list[str] = []

    def check_code(self, name: str) -> None:
        """Note a contender started on other sources than the run began with."""
        if code_version()["sources_sha256"] != self.version["sources_sha256"]:
            self.code_changed.append(name)
            self.log(f"  warning: streamproc's sources changed before {name} started")

    def log(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def start(self) -> None:
        self.broker.start()
        self.settings = self.base.model_copy(
            update={
                "broker_url": self.broker.url,
                "session_timeout_seconds": embedded_session(self.base),
                "topic_prefix": f"bench-{self.tag}.",
                "app_id": f"bench-{self.tag}",
                "redis_url": None,  # hermetic: the bench measures the worker, not a Redis
                "data_dir": self.workdir / "data",
                "sla_source_overrides": {
                    **self.base.sla_source_overrides,
                    SLA_SOURCE: self.options.alert_sla,
                },
            }
        )
        asyncio.run(create_topics(self.settings))

    def close(self) -> None:
        self.broker.stop()
        if self.options.workdir is None and not self.options.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def worker_settings(self, app: str) -> Settings:
        return self.settings.model_copy(
            update={
                "app_id": f"{self.settings.app_id}-{app}",
                "web_port": free_port(),
                "data_dir": self.workdir / "data" / app,
            }
        )

    @property
    def input_topics(self) -> list[str]:
        """The lead topics and the business topics: what the history is produced to."""
        names = topic_names(self.settings)
        return [*names.inputs.values(), *names.business.values()]


@contextlib.contextmanager
def phase(run: BenchRun, name: str) -> Iterator[None]:
    """Time a step of the run into ``run.durations``."""
    started = time.monotonic()
    try:
        yield
    finally:
        run.durations[name] = round(time.monotonic() - started, 1)


async def produce_events(
    settings: Settings, events: Iterable[SimEvent], count: int, stream: TextIO
) -> int:
    """Send ``count`` events with the project's producer, as an outside service would;
    raises if any was not delivered."""
    from streamproc.kafka.producer import EventProducer

    bar = Progress(count, stream=stream, label="produce")
    # A long request timeout: on a loaded machine tansu answered produce requests of a
    # 4,350,000-event history with RequestTimedOut (22,135 events lost at the default 40 s).
    async with EventProducer(
        settings, linger_ms=20, client_id="streamproc-bench", request_timeout_ms=300_000
    ) as producer:
        for i, (kind, event) in enumerate(events, 1):
            await producer.send(kind, event)
            if i % 2000 == 0:
                bar.update(2000)
                await asyncio.sleep(0)
        await producer.flush()
        await asyncio.sleep(0.05)
        failed = producer.failed
    bar.close()
    if failed:
        raise BenchError(f"{failed} events of the history were not delivered")
    return count
