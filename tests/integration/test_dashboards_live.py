"""Every panel of every dashboard returns data from a real Prometheus scraping a real worker."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from streamproc.engine.windows import WindowClock
from streamproc.tools.sales_team import rfc3339
from streamproc.tools.targets import publish_targets
from tests.support.business import BusinessScenario, key_of
from tests.support.harness import wait_until
from tests.support.prometheus import Prometheus
from tests.support.scenario import Scenario, noon_zone

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _panel_queries() -> list[Any]:
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "grafana" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return list(module.all_panel_queries())


def _real_values(expr: str) -> str:
    # The builder fills template variables with "match all"; pick real values instead, as a
    # manager would (two reps and two sources of the scenario: the variables are multi-value).
    return expr.replace('rep=~".*"', 'rep=~"r1|r2"').replace(
        'source=~".*"', 'source=~"referral|webinar"'
    )


def _trickle(producer, settings, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    n = 0
    while not stop.is_set():
        n += 1
        lead = f"trickle-{n}"
        event = {
            "event_id": lead,
            "occurred_at": rfc3339(time.time() - 1),
            "lead_id": lead,
            "rep_id": "r1",
            "channel": "call",
            "connected": n % 2 == 0,
        }
        producer.produce(
            settings.topic("contact-attempted"), key=lead.encode(), value=orjson.dumps(event)
        )
        if n % 10 == 0:
            producer.produce(settings.topic("lead-created"), key=b"bad", value=b"not json")
        producer.poll(0)
        time.sleep(0.2)


def _last_month(clock: WindowClock, now: float) -> list[tuple[str, dict[str, Any]]]:
    """Two deals of last month: r1's won (a new customer), r2's lost."""
    start = clock.month_start(clock.month(now) - 1) + 3 * 86400
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (rep, source, stage) in enumerate(
        (("r1", "referral", "won"), ("r2", "webinar", "lost"))
    ):
        lead, t = f"last-{i}", start + i * 3600
        common = {"lead_id": lead, "rep_id": rep}
        out += [
            ("lead-created", {**common, "event_id": f"{lead}-c", "occurred_at": rfc3339(t),
                              "source": source}),
            ("contact-attempted", {**common, "event_id": f"{lead}-a",
                                   "occurred_at": rfc3339(t + 120), "channel": "call",
                                   "connected": True}),
            ("stage-changed", {**common, "event_id": f"{lead}-s", "occurred_at": rfc3339(t + 600),
                               "to_stage": stage, "deal_value": 4000,
                               **({"lost_reason": "price"} if stage == "lost" else {})}),
        ]  # fmt: skip
    return out


def test_every_panel_query_returns_data(
    tmp_path, settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    scenario = Scenario()
    settings = settings_factory(timezone=noon_zone(scenario.now), activity_targets={"r1": 10})
    make_topics(settings)
    worker = worker_factory(settings)
    producer = kafka_producer()
    for topic, key, value in scenario.messages(settings.topic_prefix):
        producer.produce(topic, key=key, value=value)
    clock = WindowClock(ZoneInfo(settings.timezone), settings.fiscal_year_start_month)
    for kind, event in BusinessScenario(scenario.now, clock).events:  # costs, customers, NPS
        producer.produce(settings.topic(kind), key=key_of(kind, event), value=orjson.dumps(event))
    for kind, event in _last_month(clock, scenario.now):  # the "last period" panels
        producer.produce(
            settings.topic(kind), key=event["lead_id"].encode(), value=orjson.dumps(event)
        )
    producer.flush(10)
    # the quota panels: monthly revenue targets of r1, r2 and the team
    asyncio.run(publish_targets(settings, [
        ("revenue_won", "month", "r1", 20000.0),
        ("revenue_won", "month", "r2", 20000.0),
        ("revenue_won", "month", None, 50000.0),
    ]))  # fmt: skip
    stop = threading.Event()
    feeder = threading.Thread(target=_trickle, args=(producer, settings, stop), daemon=True)
    feeder.start()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{settings.web_port}")
    try:
        wait_until(
            lambda: prometheus.query('sales_stage_conversion_ratio{window="today"}'), timeout=40
        )
        wait_until(lambda: prometheus.query("streamproc_alerts_total"), timeout=20)
        queries = _panel_queries()
        assert len(queries) >= 40
        empty: list[tuple[str, str, str]] = []

        def every_panel_has_data() -> bool:
            # rate() needs two scrapes with a change: asked again each second, not a fixed
            # 5 s sleep before one try
            empty[:] = [
                (q.dashboard, q.panel, _real_values(q.expr))
                for q in queries
                if not prometheus.query(_real_values(q.expr))
            ]
            return not empty

        try:
            wait_until(every_panel_has_data, timeout=30, interval=1.0)
        except TimeoutError:
            pytest.fail(f"panels without data: {empty}")
    finally:
        stop.set()
        prometheus.stop()
    assert worker.ready()
