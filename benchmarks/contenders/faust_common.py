"""The Faust app the two Faust contenders share: defaults, except what tansu needs to join."""

from __future__ import annotations

import argparse

import faust

from benchmarks.contenders.common import Status
from streamproc.config import load_settings
from streamproc.kafka.security import faust_credentials

__all__ = ["make_app", "run"]


def make_app(args: argparse.Namespace) -> faust.App:
    # The security settings (STREAMPROC_KAFKA_*) from the environment, as the worker's.
    settings = load_settings(broker_url=f"kafka://{args.broker}")
    return faust.App(
        args.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=args.datadir,
        topic_partitions=args.partitions,
        # Faust's defaults otherwise; with its 60 s session timeouts the first join on the
        # embedded broker takes ~30 s (stack-measured.md), the streamproc worker sets these too.
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=5,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
    )


def run(app: faust.App, status: Status) -> None:
    """Run the worker, writing ``status`` four times a second for the runner to read."""

    @app.timer(0.25)
    async def report() -> None:
        status.write()

    faust.Worker(app, loglevel="WARNING").execute_from_commandline()
