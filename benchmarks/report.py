"""What a run prints and returns: the figures (the JSON line), the goals met, the table."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from benchmarks.latency import Latency
from benchmarks.metrics import quantile
from benchmarks.options import GOALS
from benchmarks.session import BenchRun
from benchmarks.throughput import Throughput

__all__ = ["build_figures", "check_goals", "print_table", "row"]


def row(t: Throughput) -> str:
    label = _LABELS.get(t.name, t.name)
    bound = "" if t.reached else "  (time bound: count so far)"
    foreign = t.extra.get("foreign_cores", 0.0)
    return (
        f"  {label:<44} {t.events:>10,} {t.seconds:>8.1f}s {t.rate:>11,.0f}/s "
        f"{foreign:>8.2f}{bound}"
    )


_LABELS = {
    "raw": "raw aiokafka getmany + orjson.loads",
    "plain": "Faust agent doing nothing (raw values)",
    "naive": "naive Faust app (table += 1, json)",
    "kpi2": "KPI topology, 2 workers",
    "kpi1": "KPI topology, 1 worker",
}


def _ms(seconds: float | None) -> float | None:
    if seconds is None or seconds != seconds:  # None or NaN
        return None
    return round(seconds * 1000, 1)


def _rate(results: dict[str, Throughput], name: str) -> float | None:
    return round(results[name].rate, 1) if name in results else None


def build_figures(
    run: BenchRun,
    results: dict[str, Throughput],
    latency: Latency | None,
    memory: dict[str, float],
    profile: dict[str, Any] | None,
    parts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON figures; ``parts``: those of the other parts (freshness, take-over)."""
    opts = run.options
    figures: dict[str, Any] = {
        "events_per_s": _rate(results, "kpi1"),
        "events_per_s_2_workers": _rate(results, "kpi2"),
        "naive_faust_events_per_s": _rate(results, "naive"),
        "plain_faust_events_per_s": _rate(results, "plain"),
        "raw_consumer_events_per_s": _rate(results, "raw"),
        "p50_latency_ms": None,
        "p99_latency_ms": None,
        "alert_latency_ms": None,
        "rss_mb": round(memory["VmHWM"], 1) if "VmHWM" in memory else None,
        "n_events": opts.events,
        "leads": opts.lead_count,
        "reps": opts.reps,
        "partitions": run.settings.partitions,
        "quick": opts.quick,
        "cpus": os.cpu_count(),
        "reached": {name: t.reached for name, t in results.items()},
        "caught_up": results["kpi1"].extra.get("caught_up", True) if "kpi1" in results else None,
        "measured_seconds": {name: round(t.seconds, 2) for name, t in results.items()},
        "startup_seconds": {name: round(t.startup_seconds, 1) for name, t in results.items()},
        "foreign_cpu_cores": {
            name: round(t.extra.get("foreign_cores", 0.0), 2) for name, t in results.items()
        },
        # CPU seconds per event of the KPI workers (all of them) and of the broker: whether
        # two workers share the work or each adds its own, robust to the machine's other load.
        "cpu_us_per_event": {
            name: {
                "workers": t.extra.get("worker_cpu_us_per_event"),
                "broker": t.extra.get("broker_cpu_us_per_event"),
            }
            for name, t in results.items()
            if "worker_cpu_us_per_event" in t.extra
        },
        "durations": run.durations,
        "code": {**run.version, "changed_before": run.code_changed},
    }
    if latency is not None:
        figures.update(
            {
                "p50_latency_ms": _ms(quantile(latency.samples, 0.5)),
                "p99_latency_ms": _ms(quantile(latency.samples, 0.99)),
                "max_latency_ms": _ms(max(latency.samples, default=float("nan"))),
                "latency_markers": len(latency.samples),
                "latency_markers_lost": latency.lost,
                "latency_scrape_checks": latency.confirmations,
                "latency_scrape_violations": latency.violations,
                "latency_scrape_shortfalls": latency.shortfalls,
                "latency_load_events_per_s": round(latency.rate, 1),
                "latency_foreign_cpu_cores": round(latency.foreign_cores, 2),
                "histogram_p50_latency_ms": _ms(latency.histogram_p50),
                "histogram_p99_latency_ms": _ms(latency.histogram_p99),
                "alert_latency_ms": _ms(max(latency.alert_samples))
                if latency.alert_samples
                else None,
                "alert_latency_p50_ms": _ms(quantile(latency.alert_samples, 0.5))
                if latency.alert_samples
                else None,
                "alert_probes": latency.alert_probes,
                "alerts_seen": len(latency.alert_samples),
            }
        )
    if "VmRSS" in memory:
        figures["rss_end_mb"] = round(memory["VmRSS"], 1)
    if "2 workers" in memory:
        figures["rss_mb_2_workers_max"] = round(memory["2 workers"], 1)
    figures.update(parts or {})
    figures["goals"] = check_goals(figures)
    if profile is not None:
        figures["profile"] = {
            "throughput_top_self": [[f, round(x, 4)] for f, x in profile["self"][:10]],
            "throughput_top_streamproc": [[f, round(x, 4)] for f, x in profile["ours"][:10]],
        }
        if "live" in profile:
            figures["profile"]["live_top_streamproc"] = [
                [f, round(x, 4)] for f, x in profile["live"]["ours"][:10]
            ]
    return figures


def check_goals(figures: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for name, check in GOALS.items():
        try:
            out[name] = bool(check(figures))
        except (TypeError, ZeroDivisionError, KeyError):
            out[name] = None  # a figure is missing (n/a)
    return out


_WORKERS = {"kpi1": "1 worker", "kpi2": "2 workers"}


def _seconds(value: float | None) -> str:
    return "n/a (none reached)" if value is None else f"{value} s"


def print_table(
    run: BenchRun,
    results: dict[str, Throughput],
    latency: Latency | None,
    memory: dict[str, float],
    figures: dict[str, Any],
    profile: dict[str, Any] | None,
) -> None:
    w = run.log
    opts = run.options
    w("")
    w(
        f"streamproc bench ({'quick' if opts.quick else 'full'}): {opts.events:,} events "
        f"({opts.lead_count:,} leads, {opts.reps} reps, {opts.span_days:g} days), "
        f"{run.settings.partitions} partitions, {os.cpu_count()} CPUs, "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    w(
        f"  {'throughput, reading the history from the start':<44} {'events':>10} {'time':>9} "
        f"{'rate':>13} {'others*':>8}"
    )
    for name in ("kpi1", "kpi2", "naive", "plain", "raw"):
        if name in results:
            w(row(results[name]))
    if "kpi1" in results:
        kpi = results["kpi1"].rate
        for name, label in (
            ("kpi2", "2 workers / 1"),
            ("naive", "1 worker / naive"),
            ("plain", "1 worker / plain agent"),
        ):
            if name in results and results[name].rate:
                ratio = results[name].rate / kpi if name == "kpi2" else kpi / results[name].rate
                w(f"  {'ratio ' + label:<44} {ratio:>34.2f}x")
    for name in ("kpi1", "kpi2"):
        cost = figures["cpu_us_per_event"].get(name)
        if cost:
            w(
                f"  {'CPU per event, ' + _WORKERS[name]:<44} workers {cost['workers']} us, "
                f"broker {cost['broker']} us"
            )
    if figures.get("freshness_probes"):
        w(
            "  whole series behind their counts (1 probe/s, its 3 KPIs on /metrics every 1 s): "
            f"ratios max "
            f"{_seconds(figures['freshness_ratio_max_lag_s'])}, quantiles max "
            f"{_seconds(figures['freshness_quantile_max_lag_s'])}, p50 "
            f"{_seconds(figures['freshness_p50_lag_s'])} over {figures['freshness_probes']} "
            f"probes ({figures['freshness_unreached']} never reached by a ratio or a quantile)"
        )
    if latency is not None:
        w(
            f"  latency at {latency.rate:,.0f} events/s (append -> /metrics): "
            f"p50 {figures['p50_latency_ms']} ms, p99 {figures['p99_latency_ms']} ms, "
            f"max {figures['max_latency_ms']} ms over {latency.markers} markers "
            f"({latency.lost} lost; /metrics checks: {latency.confirmations} ok, "
            f"{latency.violations} failed; others used {latency.foreign_cores:.2f} cores)"
        )
        w(
            f"  worker's delay histogram over the same run: p50 "
            f"{figures['histogram_p50_latency_ms']} ms, p99 {figures['histogram_p99_latency_ms']}"
            " ms (bucket interpolation)"
        )
        if latency.alert_samples:
            w(
                f"  SLA breach -> alert: max {figures['alert_latency_ms']} ms, p50 "
                f"{figures['alert_latency_p50_ms']} ms ({len(latency.alert_samples)} of "
                f"{latency.alert_probes} probes alerted)"
            )
        else:
            w(f"  SLA breach -> alert: n/a (no alert for {latency.alert_probes} probe leads)")
    if memory:
        w(
            f"  worker peak RSS (VmHWM): {figures['rss_mb']} MiB after the history and the "
            f"latency run (now {figures.get('rss_end_mb')} MiB)"
        )
    if profile is not None:
        w("  profile of the 1-worker history run (py-spy; share of samples):")
        w("    on top of the stack (self):")
        for frame, share in profile["self"][:8]:
            w(f"      {share * 100:5.1f}%  {frame}")
        w("    streamproc functions, callees included:")
        for frame, share in profile["ours"][:10]:
            w(f"      {share * 100:5.1f}%  {frame}")
        if "live" in profile:
            w("  profile of the latency run, streamproc functions, callees included:")
            for frame, share in profile["live"]["ours"][:10]:
                w(f"      {share * 100:5.1f}%  {frame}")
    _takeover_rows(w, figures)
    w("  goals: " + ", ".join(f"{k}: {_verdict(v)}" for k, v in figures["goals"].items()))
    w("  * CPU cores used by other processes on the machine meanwhile (not the bench's)")
    w(f"  durations (s): {run.durations}")


def _verdict(value: bool | None) -> str:
    return "n/a" if value is None else "met" if value else "NOT met"


_TAKEOVER_ROWS = (
    ("takeover_restart_s", "SIGTERM, restarted on its data dir", "takeover_leads"),
    ("takeover_empty_s", "a new worker, empty data dir", "takeover_leads"),
    ("handover_sigterm_s", "2 workers, one SIGTERMed: the other alone", "takeover_leads"),
    ("handover_sigkill_s", "2 workers, one SIGKILLed: the other alone", "takeover_leads"),
    ("takeover_restart_1m_s", "SIGTERM, restarted on its data dir", "takeover_big_leads"),
)


def _takeover_rows(w: Callable[[str], None], figures: dict[str, Any]) -> None:
    """The take-over part: seconds until every series is served exactly again."""
    for error in figures.get("takeover_errors", []):
        w(f"  take-over FAILED at {error}")
    if not any(key in figures for key, _, _ in _TAKEOVER_ROWS):
        return
    w("  take-over, seconds until the worker(s) serve every series exactly:")
    for key, label, size in _TAKEOVER_ROWS:
        if key in figures:
            w(f"    {label:<44} {figures[size]:>10,} leads {figures[key]:>8.1f}s")
    if "takeover_build_s" in figures:
        w(
            f"    (the history built in {figures['takeover_build_s']:.1f}s; the first worker "
            f"stopped in {figures['takeover_stop_s']:.1f}s; session timeout "
            f"{figures['session_timeout_s']:g}s; other processes used "
            f"{figures['takeover_foreign_cpu_cores']:.2f} cores meanwhile)"
        )
    if "rss_1m_leads_mb" in figures:
        w(
            f"    worker peak RSS at {figures['takeover_big_leads']:,} leads: "
            f"{figures['rss_1m_leads_mb']} MiB (building {figures['rss_1m_build_mb']}, "
            f"restarted {figures['rss_1m_restart_mb']}); built in "
            f"{figures['takeover_build_1m_s']:.1f}s"
        )
