"""How far the whole series (ratios, quantiles) lag their counts on /metrics.

A count is exported by the worker that holds the partition, as soon as its batch is
applied; a ratio or a quantile is exported whole by the owner of its series, from the
partial summaries each worker publishes in rounds within a byte budget
(``streamproc.worker.partials``). Under load a round may wait: this measures how long.

Probe leads of their own rep, one a second, each with its first contact attempt: the k-th
lead was created k seconds before the attempt, and every attempt connects but the first.
After k probes, on the rep's ``1h`` series:

- ``sales_contact_attempts`` (a count) is k,
- ``sales_connect_ratio`` is (k - 1) / k,
- ``sales_response_time_seconds`` at quantile 0.5 is (k + 1) / 2 (exact values in ``1h``),

so each scrape says which probe each of the three has reached. The lag of probe k: the
first scrape whose ratio (or quantile) shows k, minus the first whose count did. /metrics
is scraped every second meanwhile, under the latency run's steady load, for those three
KPIs only (``?name=``): a whole scrape renders every series (~3 s back to back at 20,000
leads under that load), a load 15x the shipped Prometheus' that took the loop from the
rounds being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.latency import steady_load
from benchmarks.metrics import quantile
from benchmarks.options import BenchError, BenchOptions
from benchmarks.processes import WorkerHandle
from streamproc.tools.sales_team import rfc3339

__all__ = ["FRESH_REP", "Freshness", "freshness_run", "probes_shown"]

FRESH_REP = "bench-fresh"
_QUERY = "/metrics?" + "&".join(
    f"name={name}"
    for name in ("sales_contact_attempts", "sales_connect_ratio", "sales_response_time_seconds")
)
_SAMPLE = re.compile(rb"^(sales_[a-z_]+)\{([^}]*)\} (\S+)$", re.M)


@dataclass
class Freshness:
    probes: int
    ratio_lags: list[float] = field(default_factory=list)
    """Per probe the ratio reached: seconds after its count showed it."""
    quantile_lags: list[float] = field(default_factory=list)
    unreached: int = 0
    """Probes the count showed but a whole series never did before the probe ended."""
    scrapes: int = 0

    def figures(self) -> dict[str, Any]:
        lags = self.ratio_lags + self.quantile_lags
        return {
            "freshness_max_lag_s": round(max(lags), 2) if lags else None,
            "freshness_p50_lag_s": round(quantile(sorted(lags), 0.5), 2) if lags else None,
            "freshness_ratio_max_lag_s": _max(self.ratio_lags),
            "freshness_quantile_max_lag_s": _max(self.quantile_lags),
            "freshness_probes": self.probes,
            "freshness_unreached": self.unreached,
            "freshness_scrapes": self.scrapes,
        }


def _max(values: list[float]) -> float | None:
    return round(max(values), 2) if values else None


def probes_shown(metrics: bytes, rep: str = FRESH_REP) -> tuple[int, int, int]:
    """(count, ratio, quantile): the last probe each of the rep's ``1h`` series shows."""
    wanted = f'rep="{rep}"'.encode()
    count = ratio = median = 0
    for m in _SAMPLE.finditer(metrics):
        name, labels, raw = m.group(1), m.group(2), float(m.group(3))
        if wanted not in labels or b'window="1h"' not in labels:
            continue
        if name == b"sales_contact_attempts":
            count = round(raw)
        elif name == b"sales_connect_ratio":
            ratio = round(1 / (1 - raw)) if raw < 1 else 0  # (k - 1) / k
        elif name == b"sales_response_time_seconds" and b'quantile="0.5"' in labels:
            median = round(2 * raw - 1)  # (k + 1) / 2
    return count, ratio, median


def _probe(tag: str, k: int, now: float) -> list[tuple[str, dict[str, Any]]]:
    lead = f"{FRESH_REP}-{tag}-{k}"
    created = {
        "event_id": f"{lead}-c",
        "occurred_at": rfc3339(now - k),
        "lead_id": lead,
        "rep_id": FRESH_REP,
        "source": FRESH_REP,
    }
    attempt = {
        "event_id": f"{lead}-a",
        "occurred_at": rfc3339(now),
        "lead_id": lead,
        "rep_id": FRESH_REP,
        "channel": "call",
        "connected": k > 1,
    }
    return [("lead-created", created), ("contact-attempted", attempt)]


async def _send_probes(producer: Any, tag: str, seconds: float) -> int:
    k = 0
    end = time.time() + seconds
    while time.time() < end:
        k += 1
        for kind, event in _probe(tag, k, time.time()):
            await producer.send(kind, event)
        await asyncio.sleep(1.0)
    return k


async def _scrape(worker: WorkerHandle, stop: asyncio.Event) -> list[tuple[float, int, int, int]]:
    """(scrape start, count, ratio, quantile) about once a second until ``stop``."""
    seen: list[tuple[float, int, int, int]] = []
    while not stop.is_set():
        started = time.time()
        status, body = await asyncio.to_thread(worker.get, _QUERY, 30.0)
        if status != 200:
            raise BenchError(f"{_QUERY} answered {status}: {body[:200]!r}")
        shown = probes_shown(body)
        seen.append((started, *shown))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, started + 1.0 - time.time()))
    return seen


def lags(seen: list[tuple[float, int, int, int]], column: int) -> tuple[list[float], int]:
    """Per probe the count showed: first scrape showing it in ``column`` minus the first
    showing it in the count; and how many never showed in ``column``."""
    first_count: dict[int, float] = {}
    first_whole: dict[int, float] = {}
    for row in seen:
        at = row[0]
        for k in range(1, row[1] + 1):
            first_count.setdefault(k, at)
        for k in range(1, row[column] + 1):
            first_whole.setdefault(k, at)
    out = [max(0.0, first_whole[k] - at) for k, at in first_count.items() if k in first_whole]
    return out, sum(1 for k in first_count if k not in first_whole)


async def freshness_run(worker: WorkerHandle, opts: BenchOptions, tag: str) -> Freshness:
    from streamproc.kafka.producer import EventProducer

    settings = worker.settings
    async with EventProducer(settings, linger_ms=5, client_id="bench-freshness") as producer:
        stop_load, stop_scrape, flowing = asyncio.Event(), asyncio.Event(), asyncio.Event()
        load = asyncio.create_task(
            steady_load(settings, producer, opts, [0], flowing, stop_load, seed=2)
        )
        await flowing.wait()
        scrapes = asyncio.create_task(_scrape(worker, stop_scrape))
        probes = await _send_probes(producer, tag, opts.freshness_seconds)
        await asyncio.sleep(opts.freshness_wait)  # the last probes' whole series on their way
        stop_load.set()
        stop_scrape.set()
        await load
        seen = await scrapes
    ratio, ratio_missing = lags(seen, 2)
    median, median_missing = lags(seen, 3)
    return Freshness(probes, ratio, median, ratio_missing + median_missing, len(seen))
