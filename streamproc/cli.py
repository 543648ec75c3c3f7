"""The ``streamproc`` command line: worker, broker, topics, simulate, replay, schemas, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from streamproc.config import Settings, load_settings
from streamproc.exceptions import StreamprocError

__all__ = ["main"]

log = logging.getLogger("streamproc")


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.worker.run import run_worker

    run_worker(settings)
    return 0


def _cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from streamproc.tools.broker import EmbeddedBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(args.port) as broker:
        log.info("embedded broker listening: %s (Ctrl-C to stop)", broker.url)
        try:
            while not stop.wait(0.5) and broker.running:
                pass
        except KeyboardInterrupt:
            pass
    return 0


def _cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.kafka.topics import create_topics, wait_for_broker

    async def run() -> list[str]:
        await wait_for_broker(settings, timeout=args.wait)
        return await create_topics(settings)

    created = asyncio.run(run())
    log.info("topics created: %s", ", ".join(created) if created else "none (all exist)")
    return 0


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.tools.simulate import run_simulation

    sent = asyncio.run(
        run_simulation(
            settings,
            rate=args.rate,
            reps=args.reps,
            seed=args.seed,
            duration=args.duration,
            stop=None,
        )
    )
    log.info("simulation sent %d events", sent)
    return 0


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.tools.replay import run_replay

    return run_replay(
        settings,
        args.file,
        progress=not args.no_progress,
        dry_run=args.dry_run,
        create=args.create_topics,
    )


_BENCH_VALUES = (
    "events",
    "leads",
    "reps",
    "time_bound",
    "latency_seconds",
    "latency_rate",
    "alert_probes",
    "alert_wait",
    "only",
    "profile",
    "workdir",
)
"""The bench's options that take a value, as ``python -m benchmarks`` spells them too."""


def _bench_checkout() -> Path | None:
    """The directory ``python -m benchmarks`` would run the bench from here: the current
    directory (a source checkout) or a ``PYTHONPATH`` entry holding ``benchmarks/``."""
    import os

    roots = [
        Path.cwd(),
        *(Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p),
    ]
    for root in roots:
        if (root / "benchmarks" / "__main__.py").is_file():
            return root
    return None


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """The benchmark is not in the installed package: run a checkout's ``python -m benchmarks``
    with the same arguments."""
    import subprocess

    if _bench_checkout() is None:
        raise StreamprocError(
            "the benchmark runs from a source checkout, not the installed package: "
            "git clone <the streamproc repository>; cd streamproc; python -m benchmarks --quick"
        )
    argv = [sys.executable, "-m", "benchmarks"]
    argv += ["--quick"] if args.quick else []
    for name in _BENCH_VALUES:
        value = getattr(args, name)
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    argv += ["--backfill"] if args.backfill else []
    return subprocess.run(argv, check=False).returncode


def _cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.contract.schemas import write_schemas

    for path in write_schemas(Path(args.out)):
        log.info("wrote %s", path)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.tools.demo import run_demo

    return run_demo(settings, rate=args.rate, reps=args.reps)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamproc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a production worker").set_defaults(run=_cmd_worker)
    broker = sub.add_parser("broker", help="the embedded Kafka-compatible broker alone")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(run=_cmd_broker)
    topics = sub.add_parser("topics", help="topic management")
    topics_sub = topics.add_subparsers(dest="action", required=True)
    create = topics_sub.add_parser("create", help="create the topics (idempotent)")
    create.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the broker")
    create.set_defaults(run=_cmd_topics)
    simulate = sub.add_parser("simulate", help="a simulated sales team producing events")
    simulate.add_argument("--rate", type=float, default=20.0, help="events per second")
    simulate.add_argument("--reps", type=int, default=8, help="team size")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    simulate.set_defaults(run=_cmd_simulate)
    replay = sub.add_parser("replay", help="produce historical events from JSON Lines (backfill)")
    replay.add_argument("file", help='JSON Lines, one event a line ("-": stdin)')
    replay.add_argument("--dry-run", action="store_true", help="validate only, send nothing")
    replay.add_argument("--create-topics", action="store_true", help="create missing topics")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.set_defaults(run=_cmd_replay)
    bench = sub.add_parser(
        "bench",
        help="the benchmark, from a source checkout: runs `python -m benchmarks` there",
        description="Runs `python -m benchmarks` with these arguments; the benchmark is not "
        "installed with the package: it runs from a source checkout.",
    )
    bench.add_argument("--quick", action="store_true", help="200,000 events, ~3 minutes")
    bench.add_argument("--events", type=int, help="history size (default 1,000,000)")
    bench.add_argument("--leads", type=int, help="leads in the history (default events/10)")
    bench.add_argument("--reps", type=int, help="reps in the history (default 100)")
    bench.add_argument("--time-bound", type=float, help="seconds per throughput contender")
    bench.add_argument("--latency-seconds", type=float, help="length of the latency run")
    bench.add_argument("--latency-rate", type=float, help="events/s of the latency run")
    bench.add_argument("--alert-probes", type=int, help="short-SLA leads for the alert delay")
    bench.add_argument("--alert-wait", type=float, help="seconds to wait for the last alert")
    bench.add_argument("--only", help="contenders, comma-separated: raw,plain,naive,kpi2,kpi1")
    bench.add_argument("--profile", help="py-spy profile of the 1-worker run into this dir")
    bench.add_argument("--workdir", help="keep logs and data here (default: a temp dir)")
    bench.add_argument(
        "--backfill", action="store_true", help="bench `streamproc replay` into a worker instead"
    )
    bench.set_defaults(run=_cmd_bench)
    schemas = sub.add_parser("schemas", help="write the JSON Schemas")
    schemas.add_argument("--out", default="schemas")
    schemas.set_defaults(run=_cmd_schemas)
    demo = sub.add_parser("demo", help="embedded broker + worker + simulated team")
    demo.add_argument("--rate", type=float, default=30.0, help="simulated events per second")
    demo.add_argument("--reps", type=int, default=8, help="simulated team size")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        settings = load_settings()
        logging.getLogger().setLevel(settings.log_level.upper())
        return run(args, settings)
    except StreamprocError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)  # noqa: T201 - the one line a user sees
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
