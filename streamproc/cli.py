"""The streamproc command line: live sales KPIs from CRM events in Kafka.

Start with `streamproc demo` (nothing else needed); `streamproc COMMAND --help` explains a
command. Every command reads the STREAMPROC_* settings (environment or a .env file):
`streamproc settings` lists them with their defaults and current values."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streamproc.config import Settings, load_settings
from streamproc.exceptions import StreamprocError

__all__ = ["build_parser", "main"]

log = logging.getLogger("streamproc")
DEMO_HISTORY_DAYS = 62.0
"""The demo's past: two months, so this month's and last month's boards have values."""


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
    from streamproc.kafka.topics import wait_for_broker
    from streamproc.tools.simulate import run_simulation

    # One line naming the broker and what to check, not aiokafka's traceback.
    asyncio.run(wait_for_broker(settings, timeout=args.wait))
    sent = asyncio.run(
        run_simulation(
            settings,
            rate=args.rate,
            reps=args.reps,
            seed=args.seed,
            duration=args.duration,
            stop=None,
            targets=True,
            history_days=args.history_days,
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


def _cmd_targets(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.kafka.topics import wait_for_broker
    from streamproc.tools.targets import checked_target, delete_target, list_targets, set_target

    rep = getattr(args, "rep", None)
    if args.action == "set":
        args.value = _target_value(args.value)
    if args.action != "list":  # a bad target is refused before any connection
        checked_target(args.measure, args.period, rep, getattr(args, "value", None))
    # A broker down or misnamed: one line naming it and what to check, as `topics create`
    # says it, not aiokafka's 40-line traceback of the first connection refused.
    asyncio.run(wait_for_broker(settings, timeout=args.wait))
    if args.action == "set":
        asyncio.run(set_target(settings, args.measure, args.period, rep, args.value))
        log.info("target set: %s %s %s = %s", args.measure, args.period, rep or "team", args.value)
    elif args.action == "delete":
        asyncio.run(delete_target(settings, args.measure, args.period, rep))
        log.info("target deleted: %s %s %s", args.measure, args.period, rep or "team")
    else:
        targets = asyncio.run(list_targets(settings))
        for (measure, period, who), value in sorted(targets.items()):
            print(f"{measure}\t{period}\t{who or '*'}\t{value:g}")  # noqa: T201 - the output
    return 0


def _target_value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise StreamprocError(
            f"target refused, nothing changed: the value must be a number, got {text!r}"
        ) from None


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


def _cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.tools.reference import settings_table

    print(settings_table(settings))  # noqa: T201 - the command's output
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.tools.demo import run_demo

    return run_demo(settings, rate=args.rate, reps=args.reps, history_days=args.history_days)


_SETTINGS_NOTE = (
    "Reads the STREAMPROC_* settings (environment or a .env file in the working directory); "
    "`streamproc settings` lists each with its default and current value, "
    "docs/configuration.md explains them."
)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; descriptions keep their own line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:  # unset, or a flag: no default
            return action.help
        return super()._get_help_string(action)


def _command(
    sub: Any, name: str, summary: str, details: str = "", reads: str = _SETTINGS_NOTE
) -> argparse.ArgumentParser:
    """A sub-command whose --help says what it does, what it reads and every default."""
    parts = (summary[0].upper() + summary[1:] + ".", details, reads)
    description = "\n\n".join(textwrap.fill(part, 88) for part in parts if part)
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, formatter_class=_Help
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamproc", description=__doc__, formatter_class=_Help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = _command(
        sub,
        "demo",
        "embedded broker + worker + simulated team, in one command",
        "Feeds the worker the simulated team's recent past first (whole lives of leads, "
        "with a progress bar), so every board has plausible values on first open; then "
        "prints the URLs to open and a line every 5 s. Ctrl-C stops everything it started.",
    )
    demo.add_argument("--rate", type=float, default=4.0, help="simulated events per second")
    demo.add_argument("--reps", type=int, default=8, help="simulated team size")
    demo.add_argument(
        "--history-days",
        type=float,
        default=DEMO_HISTORY_DAYS,
        help="days of the team's past fed to the worker before it goes live",
    )
    demo.set_defaults(run=_cmd_demo)
    _command(
        sub,
        "worker",
        "run a production worker (until SIGTERM or Ctrl-C)",
        "Waits for the broker (STREAMPROC_BROKER_URL), refuses missing topics (create them "
        "with `streamproc topics create`) and serves /metrics, /kpis, /healthz and /readyz "
        "on STREAMPROC_WEB_PORT.",
    ).set_defaults(run=_cmd_worker)
    broker = _command(
        sub, "broker", "the embedded Kafka-compatible broker alone (memory only)", reads=""
    )
    broker.add_argument("--port", type=int, default=9092, help="port to listen on")
    broker.set_defaults(run=_cmd_broker)
    topics = _command(sub, "topics", "topic management")
    topics_sub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _command(
        topics_sub,
        "create",
        "create the missing topics (idempotent)",
        "Every topic gets STREAMPROC_PARTITIONS partitions under STREAMPROC_TOPIC_PREFIX.",
    )
    create.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the broker")
    create.set_defaults(run=_cmd_topics)
    simulate = _command(sub, "simulate", "a simulated sales team producing events")
    simulate.add_argument("--rate", type=float, default=20.0, help="events per second")
    simulate.add_argument("--reps", type=int, default=8, help="team size")
    simulate.add_argument("--seed", type=int, default=0, help="same seed, same team and leads")
    simulate.add_argument(
        "--duration", type=float, default=None, help="seconds to run (unset: until Ctrl-C)"
    )
    simulate.add_argument(
        "--history-days",
        type=float,
        default=0.0,
        help="first send this many days of the team's past (whole lives, ~100 leads a day "
        "for 8 reps, then up to an hour at the rate), as fast as the broker takes them",
    )
    simulate.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the broker")
    simulate.set_defaults(run=_cmd_simulate)
    replay = _command(
        sub,
        "replay",
        "produce historical events from JSON Lines (backfill)",
        "Each line is checked as the worker checks events; bad lines are reported as "
        "FILE:LINE: reason and skipped. docs/events.md gives the line formats.",
    )
    replay.add_argument("file", help='JSON Lines, one event a line ("-": stdin)')
    replay.add_argument("--dry-run", action="store_true", help="validate only, send nothing")
    replay.add_argument("--create-topics", action="store_true", help="create missing topics")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.set_defaults(run=_cmd_replay)
    _targets_parser(sub)
    _bench_parser(sub)
    schemas = _command(sub, "schemas", "write the JSON Schemas of the events and outputs", reads="")
    schemas.add_argument("--out", default="schemas", help="directory to write them into")
    schemas.set_defaults(run=_cmd_schemas)
    _command(
        sub, "settings", "print every setting: its variable, default and current value"
    ).set_defaults(run=_cmd_settings)
    return parser


def _targets_parser(sub: Any) -> None:
    from streamproc.contract.targets import MEASURES, TARGET_PERIODS

    targets = _command(
        sub,
        "targets",
        "set, list and delete the targets (quotas) on the topic sales.targets",
        "Every worker applies a change within seconds, without a restart. Measures: "
        f"{', '.join(MEASURES)}; periods: {', '.join(TARGET_PERIODS)} (day: the today "
        "window). Without --rep, the team's target.",
    )
    actions = targets.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, summary in (("set", "set or change a target"), ("delete", "remove a target")):
        parser = _command(actions, action, summary)
        # No argparse choices or type: a bad measure, period or value is refused in one
        # line by the check the workers make (``checked_target``), not with a usage block.
        parser.add_argument(
            "--measure", required=True, help=f"what is counted: {', '.join(MEASURES)}"
        )
        parser.add_argument(
            "--period", required=True, help=f"over which period: {', '.join(TARGET_PERIODS)}"
        )
        parser.add_argument("--rep", default=None, help="a rep id (unset: the team)")
        if action == "set":
            parser.add_argument("value", help="the target, a positive number")
        parser.set_defaults(run=_cmd_targets)
    _command(actions, "list", "print the targets in force, one a line").set_defaults(
        run=_cmd_targets
    )
    for each in actions.choices.values():
        each.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the broker")


def _bench_parser(sub: Any) -> None:
    bench = _command(
        sub,
        "bench",
        "the benchmark, from a source checkout: runs `python -m benchmarks` there",
        "The benchmark is not installed with the package. Options left out take the "
        "benchmark's own defaults (docs/performance.md).",
        reads="",
    )
    bench.add_argument("--quick", action="store_true", help="200,000 events, ~3 minutes")
    bench.add_argument("--events", type=int, help="history size (benchmark: 1,000,000)")
    bench.add_argument("--leads", type=int, help="leads in the history (benchmark: events/10)")
    bench.add_argument("--reps", type=int, help="reps in the history (benchmark: 100)")
    bench.add_argument("--time-bound", type=float, help="seconds per throughput contender")
    bench.add_argument("--latency-seconds", type=float, help="length of the latency run")
    bench.add_argument("--latency-rate", type=float, help="events/s of the latency run")
    bench.add_argument("--alert-probes", type=int, help="short-SLA leads for the alert delay")
    bench.add_argument("--alert-wait", type=float, help="seconds to wait for the last alert")
    bench.add_argument("--only", help="contenders, comma-separated: raw,plain,naive,kpi2,kpi1")
    bench.add_argument("--profile", help="py-spy profile of the 1-worker run into this dir")
    bench.add_argument("--workdir", help="keep logs and data here (unset: a temp dir)")
    bench.add_argument(
        "--backfill", action="store_true", help="bench `streamproc replay` into a worker instead"
    )
    bench.set_defaults(run=_cmd_bench)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
