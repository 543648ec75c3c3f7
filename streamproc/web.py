"""The worker's HTTP routes: /metrics, /healthz, /readyz and /kpis."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from streamproc.topology import Topology

__all__ = ["register_routes"]


def register_routes(topology: Topology) -> None:
    app = topology.app

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        body = generate_latest(topology.registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        ready = topology.ready and not app.rebalancing
        body: dict[str, Any] = {"ready": ready, "rebalancing": bool(app.rebalancing)}
        return web.json(body, status=200 if ready else 503)

    @app.page("/kpis")
    async def kpis(web: View, request: Request) -> Response:
        wanted = dict(request.query)
        out = []
        for sample in topology.samples(time.time()):
            row = _row(sample)
            if all(str(row.get(k, row["labels"].get(k))) == v for k, v in wanted.items()):
                out.append(row)
        return web.json({"kpis": out})


def _row(sample: Any) -> dict[str, Any]:
    bounds = sample.window
    return {
        "metric": sample.metric,
        "labels": sample.labels,
        "window": bounds.name if bounds else None,
        "window_start": bounds.start if bounds else None,
        "window_end": bounds.end if bounds else None,
        "value": sample.value,
    }
