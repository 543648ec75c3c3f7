"""Figures read from a worker's /metrics text, and the quantiles taken of them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from benchmarks.options import MARKER_REP

__all__ = ["delay_buckets", "events_total", "histogram_quantile", "marker_count", "quantile"]

_EVENTS_TOTAL = re.compile(rb"^streamproc_events_total\{[^}]*\} (\S+)$", re.M)
_DELAY_BUCKET = re.compile(rb'^streamproc_event_delay_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
_LEADS_CREATED = re.compile(rb"^sales_leads_created\{([^}]*)\} (\S+)$", re.M)


def events_total(metrics: bytes) -> float:
    """``streamproc_events_total`` summed over topics and outcomes."""
    return sum(float(m.group(1)) for m in _EVENTS_TOTAL.finditer(metrics))


def delay_buckets(metrics: bytes) -> dict[float, float]:
    """The cumulative buckets of ``streamproc_event_delay_seconds``: upper bound -> count."""
    return {float(m.group(1)): float(m.group(2)) for m in _DELAY_BUCKET.finditer(metrics)}


def marker_count(metrics: bytes, rep: str = MARKER_REP) -> float:
    """The 1h ``sales_leads_created`` of the marker rep (0 before its first marker)."""
    wanted = f'rep="{rep}"'.encode()
    for m in _LEADS_CREATED.finditer(metrics):
        labels = m.group(1)
        if wanted in labels and b'window="1h"' in labels:
            return float(m.group(2))
    return 0.0


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile`` over the increase between two bucket snapshots."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), like the KPIs."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
