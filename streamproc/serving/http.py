"""The worker's HTTP routes: /metrics, /healthz, /readyz and /kpis, on a small protocol
(``Served``) that the worker's topology implements."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import aiohttp
import faust
from faust.web import Request, Response, View
from multidict import MultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST

from streamproc.config import Settings
from streamproc.engine.windows import WINDOWS
from streamproc.exceptions import WebPortBusy
from streamproc.kpis.catalogue import KPIS
from streamproc.kpis.compute import Sample
from streamproc.serving.web_security import WebSecurity

PEER_TIMEOUT_SECONDS = 3.0

__all__ = ["Served", "bad_query", "check_web_port", "register_routes"]


class Served(Protocol):
    """What the routes read of a worker."""

    @property
    def serving(self) -> bool:
        """Recovered and not rebalancing: its KPIs are complete."""

    def active_partitions(self) -> set[int]:
        """The input partitions it owns."""

    def sink_status(self) -> list[dict[str, object]]:
        """Each sink's health (Redis, metric topics), for /readyz details."""

    async def render_metrics(self, names: Collection[str] | None = None) -> bytes:
        """The /metrics body (only the KPIs in ``names`` when given)."""

    def owned_samples(self, now: float) -> list[Sample]:
        """Every series it owns, whole."""


def check_web_port(settings: Settings) -> None:
    """Raise ``WebPortBusy`` when ``STREAMPROC_WEB_PORT`` cannot be bound right now.

    Faust would find out only after joining the group, then log a traceback in the middle
    of its shutdown lines and exit with 1: a user saw no cause. Bound the way aiohttp binds
    (``SO_REUSEADDR``), so a port in TIME_WAIT after a restart does not count as busy.
    """
    host, port = settings.web_host, settings.web_port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            cause = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise WebPortBusy(
                f"the web port {host}:{port} is {cause}: stop what listens there or set "
                f"STREAMPROC_WEB_PORT to a free port (e.g. STREAMPROC_WEB_PORT={port + 1})"
            ) from None


def register_routes(app: faust.App, topology: Served, security: WebSecurity) -> None:

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        # ``?name=sales_x&name=sales_y``: only those KPIs, computed alone (a whole scrape
        # renders every series: ~1 s of the loop at 100,000 leads).
        names = cast(MultiDictProxy[str], request.query).getall("name", [])  # aiohttp's
        problem = unknown_metrics(names)
        if problem is not None:  # a typo must not look like "no data yet"
            return web.json(problem, status=400)
        body = await topology.render_metrics(frozenset(names) if names else None)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        ready = topology.serving
        body: dict[str, Any] = {
            "ready": ready,
            "rebalancing": bool(app.rebalancing),
            # The input partitions this worker owns: a group is settled when the ready
            # workers' lists split the partitions between them.
            "partitions": sorted(topology.active_partitions()),
            # Redis and the metric topics degrade without stopping the KPIs: details only.
            "sinks": topology.sink_status(),
        }
        return web.json(body, status=200 if ready else 503)

    @app.page("/kpis")
    async def kpis(web: View, request: Request) -> Response:
        query = dict(request.query)
        local = query.pop("local", None) is not None
        problem = bad_query(query)
        if problem is not None:  # a typo must not look like "no data yet"
            return web.json(problem, status=400)
        rows = [
            row for row in map(kpi_row, topology.owned_samples(time.time())) if matches(row, query)
        ]
        if local:
            return web.json({"kpis": rows})
        body = await fan_out(app, rows, query, security)
        return web.json(body)


def kpi_row(sample: Sample) -> dict[str, Any]:
    bounds = sample.window
    return {
        "metric": sample.metric,
        "labels": sample.labels,
        "window": bounds.name if bounds else None,
        "window_start": _iso(bounds.start) if bounds else None,
        "window_end": _iso(bounds.end) if bounds else None,
        "value": sample.value,
    }


_LABELS = frozenset(label for entry in KPIS.values() for label in entry.series_labels)


def unknown_metrics(names: Collection[str]) -> dict[str, Any] | None:
    """The 400 answer to ``/metrics?name=...`` naming a metric that is not a KPI."""
    unknown = sorted(set(names) - set(KPIS))
    if not unknown:
        return None
    named = ", ".join(repr(name) for name in unknown)
    return {"error": f"unknown metric {named}", "valid": sorted(KPIS)}


def bad_query(query: dict[str, str]) -> dict[str, Any] | None:
    """The 400 answer to a query naming an unknown metric, window or label (with the valid
    ones); None for a good query. Label values are not checked: any rep may be new."""
    checks = (
        ("metric", query.get("metric"), sorted(KPIS)),
        ("window", query.get("window"), list(WINDOWS)),
    )
    for what, value, valid in checks:
        if value is not None and value not in valid:
            return {"error": f"unknown {what} {value!r}", "valid": valid}
    unknown = sorted(set(query) - {"metric", "window"} - _LABELS)
    if unknown:
        valid = ["metric", "window", "local", *sorted(_LABELS)]
        return {"error": f"unknown query parameter {unknown[0]!r}", "valid": valid}
    return None


def matches(row: dict[str, Any], query: dict[str, str]) -> bool:
    """``metric``, ``window`` and any label must equal the query's value; a label a
    series lacks reads as empty, as in PromQL, so that ``rep=`` selects the team's series
    (the contract's ``{rep=""}``): they carry no ``rep`` label."""
    for key, wanted in query.items():
        value = row[key] if key in ("metric", "window") else row["labels"].get(key, "")
        if value != wanted:
            return False
    return True


async def fan_out(
    app: faust.App, rows: list[dict[str, Any]], query: dict[str, str], security: WebSecurity
) -> dict[str, Any]:
    """Every series is owned by exactly one worker: ask the others for theirs and merge."""
    own = str(app.conf.canonical_url).rstrip("/")
    peers = sorted({str(url).rstrip("/") for url in app.router.tables_metadata()} - {own})
    errors: list[str] = []
    results = await asyncio.gather(
        *(_peer(app, url, query, security) for url in peers), return_exceptions=True
    )
    for url, result in zip(peers, results, strict=True):
        if isinstance(result, BaseException):
            errors.append(f"{url}: {result!r}")
        else:
            rows.extend(result)
    rows.sort(key=lambda r: (r["metric"], sorted(r["labels"].items()), r["window"] or ""))
    return {"kpis": rows, "workers": 1 + len(peers), "complete": not errors, "errors": errors}


async def _peer(
    app: faust.App, url: str, query: dict[str, str], security: WebSecurity
) -> list[dict[str, Any]]:
    params = {**query, "local": "1"}
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_SECONDS)
    headers, context = security.peer_headers(), security.peer_ssl()
    get = app.http_client.get(
        f"{url}/kpis", params=params, timeout=timeout, headers=headers, ssl=context or True
    )
    async with get as r:
        r.raise_for_status()
        body = await r.json()
    return list(body["kpis"])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
