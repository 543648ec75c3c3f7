"""``python -m benchmarks``: the bench's command line (run from a source checkout)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.options import CONTENDERS, BenchOptions
from benchmarks.run import run_backfill_bench, run_bench
from streamproc.config import load_settings
from streamproc.exceptions import StreamprocError

__all__ = ["main", "options_from"]

_FULL = BenchOptions()
_QUICK = BenchOptions.quick_preset()


def _default(name: str) -> str:
    """The default of an option, and the ``--quick`` one when it differs."""
    full, quick = getattr(_FULL, name), getattr(_QUICK, name)
    text = f"default {full:,g}" if isinstance(full, float) else f"default {full:,}"
    if quick != full:
        text += f"; --quick {quick:,g}" if isinstance(quick, float) else f"; --quick {quick:,}"
    return f"({text})"


def _contenders(value: str) -> tuple[str, ...]:
    names = tuple(n for n in value.split(",") if n)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown contender {', '.join(unknown) or '(none given)'}: "
            f"choose from {','.join(CONTENDERS)}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "The streamproc benchmark: throughput of the KPI worker (1 and 2 workers) and of "
            "three baselines on the same history, latency and alert delay under a steady "
            "load, peak RSS; then the take-over part (restart, empty data dir, hand-overs, "
            "1,000,000 leads). Starts an embedded broker; run from a source checkout. "
            "STREAMPROC_* settings apply to the workers. Prints a table, then one JSON line."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the quick preset: {_QUICK.events:,} events, ~3 minutes, then the take-over part "
        f"at {_QUICK.takeover_leads:,} leads, ~3 more (default: the full "
        f"bench, {_FULL.events:,} events, 10-18 minutes on 2 cores, then the take-over part, "
        "~30 more)",
    )
    parser.add_argument("--events", type=int, help=f"history size {_default('events')}")
    parser.add_argument(
        "--leads", type=int, help="leads in the history (default: one per 10 events)"
    )
    parser.add_argument("--reps", type=int, help=f"reps in the history {_default('reps')}")
    parser.add_argument(
        "--time-bound",
        type=float,
        metavar="SECONDS",
        help="seconds a throughput contender may run once ready; then its count so far is "
        f"used {_default('time_bound')}",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        metavar="SECONDS",
        help=f"length of the latency run {_default('latency_seconds')}",
    )
    parser.add_argument(
        "--freshness-seconds",
        type=float,
        metavar="SECONDS",
        help=f"length of the freshness probe (ratios, quantiles against their counts) "
        f"{_default('freshness_seconds')}",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        metavar="EVENTS_PER_S",
        help=f"events/s of the latency run's steady load {_default('latency_rate')}",
    )
    parser.add_argument(
        "--alert-probes",
        type=int,
        metavar="N",
        help=f"short-SLA leads for the alert delay {_default('alert_probes')}",
    )
    parser.add_argument(
        "--alert-wait",
        type=float,
        metavar="SECONDS",
        help=f"seconds to wait for the last alert after it is due {_default('alert_wait')}",
    )
    parser.add_argument(
        "--takeover-leads",
        type=int,
        metavar="N",
        help="leads of the take-over part's history, ~4.35 events each; 0 skips it "
        f"{_default('takeover_leads')}",
    )
    parser.add_argument(
        "--takeover-big-leads",
        type=int,
        metavar="N",
        help="leads of its second history: peak RSS and restart; 0 skips it "
        f"{_default('takeover_big_leads')}",
    )
    parser.add_argument(
        "--periods-leads",
        type=int,
        metavar="N",
        help="leads of the periods part's year of history, measured against its last 7 "
        f"days alone; 0 skips it {_default('periods_leads')}",
    )
    parser.add_argument(
        "--takeover-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds a take-over worker may take to build or serve a history "
        f"{_default('takeover_timeout')}",
    )
    parser.add_argument(
        "--handover-settle",
        type=float,
        metavar="SECONDS",
        help="seconds two workers run together, exact, before one is stopped "
        f"{_default('handover_settle')}",
    )
    parser.add_argument(
        "--only",
        type=_contenders,
        metavar="NAMES",
        help=f"contenders, comma-separated (default all: {','.join(CONTENDERS)})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy profile of the KPI workers into this directory (default: none)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep logs, status files and data here (default: a temporary directory, removed)",
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="bench `streamproc replay` of the history into a running worker instead "
        "(default: off)",
    )
    return parser


def options_from(args: argparse.Namespace) -> BenchOptions:
    """The ``BenchOptions`` of parsed arguments: those given over the (quick) preset."""
    given = {
        "events": args.events,
        "leads": args.leads,
        "reps": args.reps,
        "time_bound": args.time_bound,
        "latency_seconds": args.latency_seconds,
        "latency_rate": args.latency_rate,
        "freshness_seconds": args.freshness_seconds,
        "alert_probes": args.alert_probes,
        "alert_wait": args.alert_wait,
        "profile": args.profile,
        "workdir": args.workdir,
        "contenders": args.only,
        "takeover_leads": args.takeover_leads,
        "takeover_big_leads": args.takeover_big_leads,
        "periods_leads": args.periods_leads,
        "takeover_timeout": args.takeover_timeout,
        "handover_settle": args.handover_settle,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    return BenchOptions.quick_preset(**overrides) if args.quick else BenchOptions(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        logging.getLogger().setLevel(settings.log_level.upper())
        options = options_from(args)
        if args.backfill:
            run_backfill_bench(settings, options)
        else:
            figures = run_bench(settings, options)
            if figures.get("takeover_errors"):
                return 2
    except StreamprocError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
