"""A worker as a company runs it: Kafka over mutual TLS, its HTTP over TLS with basic auth
and a bearer token (``/healthz`` open), scraped by a real Prometheus, and Redis over TLS
with a password; a wrong Redis password is one line and the worker keeps processing. No
password or token appears in a log line or an HTTP answer."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from streamproc.config import Settings, child_env
from streamproc.tools.net import free_port
from streamproc.tools.sales_team import history
from tests.conftest import TlsBroker
from tests.support.harness import (
    WorkerProcess,
    event_counts,
    leads_created_7d,
    run_cli,
    wait_until,
)
from tests.support.prometheus import Prometheus
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "redis-Pa55-never-shown"
WEB_PASSWORD = "web-Pa55-never-shown"
TOKEN = "token-never-shown-0123456789"
SECRETS = (REDIS_PASSWORD, WEB_PASSWORD, TOKEN)


@pytest.fixture
def tls_redis(tls_broker: TlsBroker, tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server speaking only TLS, with a password."""
    server = RedisServer(
        free_port(), tmp_path / "redis", tls=tls_broker.certs.server, password=REDIS_PASSWORD
    )
    yield server.start()
    server.stop()


def _secured(tls_broker: TlsBroker, redis_server: RedisServer, **more: Any) -> dict[str, Any]:
    certs = tls_broker.certs
    return {
        **tls_broker.settings(),
        "redis_url": redis_server.url,
        "redis_password": REDIS_PASSWORD,
        "redis_ssl_cafile": certs.ca,
        "web_tls_certfile": certs.server.cert,
        "web_tls_keyfile": certs.server.key,
        "web_tls_cafile": certs.ca,
        "web_auth_username": "prometheus",
        "web_auth_password": WEB_PASSWORD,
        "web_auth_token": TOKEN,
        **more,
    }


def _replay_history(settings: Settings, tmp_path: Path, fresh_lead: str | None = None) -> int:
    """Topics, then 200 events ending three days ago (past the alert backfill horizon:
    counted, not alerted) and, with ``fresh_lead``, a lead created now: it breaches."""
    assert run_cli(settings, "topics", "create", "--wait", "20").returncode == 0
    end = time.time() - 3 * 86400
    events = list(history(settings, 200, 20, 86400.0, reps=3, seed=4, end=end))
    if fresh_lead is not None:
        kind, event = next((k, e) for k, e in events if k == "lead-created")
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        fresh = {**event, "event_id": fresh_lead, "lead_id": fresh_lead, "occurred_at": now}
        events.append((kind, fresh))
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"type": k, "event": e}) for k, e in events) + b"\n")
    done = run_cli(settings, "replay", "--no-progress", str(path))
    assert done.returncode == 0, done.stderr
    return len(events)


class _Subscriber(threading.Thread):
    """Collects the messages of a Redis channel, over TLS with the password."""

    def __init__(self, settings: Settings, channel: str) -> None:
        super().__init__(daemon=True)
        self.client = _redis(settings)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(channel)
        self.messages: list[Any] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                self.messages.append(orjson.loads(message["data"]))

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.pubsub.close()
        self.client.close()


def _redis(settings: Settings) -> redis.Redis:
    assert settings.redis_url and settings.redis_password
    return redis.Redis.from_url(
        settings.redis_url,
        password=settings.redis_password.get_secret_value(),
        ssl_ca_certs=str(settings.redis_ssl_cafile),
    )


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        shown = text.decode(errors="replace") if isinstance(text, bytes) else text
        for secret in SECRETS:
            assert secret not in shown


def _image_healthcheck(settings: Settings) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, run here with the worker's environment."""
    text = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    command = json.loads(text.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].splitlines()[0])
    assert command[:2] == ["python", "-c"]
    env = {**child_env(settings), "PATH": os.environ.get("PATH", "")}
    return subprocess.run(
        [sys.executable, "-c", command[2]], env=env, capture_output=True, text=True, timeout=30
    )


def _snapshot_leads_7d(settings: Settings) -> float:
    client = _redis(settings)
    try:
        values = client.hgetall("streamproc:kpi:sales_leads_created").values()
    finally:
        client.close()
    rows = [orjson.loads(raw) for raw in values]
    return sum(row["value"] for row in rows if row["labels"].get("window") == "7d")


def test_a_secured_worker_scraped_by_prometheus_with_redis_over_tls(
    tls_broker: TlsBroker,
    tls_redis: RedisServer,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = settings_factory(**_secured(tls_broker, tls_redis, response_sla_seconds=2))
    fresh = f"lead-fresh-{settings.app_id}"
    sent = _replay_history(settings, tmp_path, fresh_lead=fresh)
    alerts = _Subscriber(settings, "streamproc:alerts")
    alerts.start()
    try:
        worker = worker_factory(settings)  # ready: /readyz over HTTPS with the credentials
        wait_until(lambda: event_counts(worker).get("processed") == sent, timeout=60)
        https = "https, basic auth and bearer token (open: /healthz)"
        assert f"HTTP on port {settings.web_port}: {https}" in worker.log()

        # Redis over TLS with the password: the snapshot and the alert channel.
        wait_until(lambda: _snapshot_leads_7d(settings) == leads_created_7d(worker), timeout=30)
        assert leads_created_7d(worker) == 21  # 20 leads of the history and the fresh one
        wait_until(lambda: [a for a in alerts.messages if a["lead_id"] == fresh], timeout=30)
    finally:
        alerts.stop()

    # The HTTP: open /healthz, the rest behind the credentials, HTTPS only.
    assert worker.get("/healthz", headers={})[0] == 200
    assert _image_healthcheck(settings).returncode == 0  # the Dockerfile's, over HTTPS
    status, body = worker.get("/metrics", headers={})
    assert status == 401 and b"STREAMPROC_WEB_AUTH_USERNAME" in body
    assert worker.get("/kpis", headers=_basic("prometheus", "wrong"))[0] == 401
    assert worker.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}x"})[0] == 401
    assert worker.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    status, kpis = worker.get("/kpis")
    assert status == 200 and orjson.loads(kpis)["complete"] is True
    plain = f"http://127.0.0.1:{settings.web_port}/healthz"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(plain, timeout=5).read()

    # A real Prometheus scrapes it: HTTPS checked against the CA, basic auth.
    prometheus = Prometheus(
        tmp_path,
        f"127.0.0.1:{settings.web_port}",
        {
            "scheme": "https",
            "tls_config": {"ca_file": str(tls_broker.certs.ca)},
            "basic_auth": {"username": "prometheus", "password": WEB_PASSWORD},
        },
    )
    try:
        wait_until(lambda: prometheus.query('up{job="streamproc"} == 1'), timeout=30)
        processed = prometheus.query('sum(streamproc_events_total{outcome="processed"})')
        assert float(processed[0]["value"][1]) == sent
    finally:
        prometheus.stop()

    # A second worker: /kpis asks its peer over HTTPS with the credentials.
    second = worker_factory(settings.model_copy(update={"web_port": free_port()}), "worker-2")

    def both() -> bool:
        """Both answered (the peer over HTTPS with the credentials) and, once the group
        has settled, their rows add up to every lead."""
        answer = orjson.loads(second.get("/kpis?metric=sales_leads_created&window=7d")[1])
        whole = answer["workers"] == 2 and answer["complete"]
        return whole and sum(row["value"] for row in answer["kpis"]) == 21

    wait_until(both, timeout=60)
    _assert_no_secret(worker.log(), second.log(), worker.get("/readyz")[1], kpis, body)


def test_a_wrong_redis_password_is_one_line_and_the_worker_goes_on(
    tls_broker: TlsBroker,
    tls_redis: RedisServer,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    wrong = "wrong-" + REDIS_PASSWORD[::-1]
    settings = settings_factory(**_secured(tls_broker, tls_redis, redis_password=wrong))
    sent = _replay_history(settings, tmp_path)
    worker = worker_factory(settings)
    wait_until(lambda: event_counts(worker).get("processed") == sent, timeout=60)
    assert leads_created_7d(worker) == 20  # the KPIs go on without Redis

    status, body = worker.get("/readyz")
    assert status == 200
    redis_status = next(s for s in orjson.loads(body)["sinks"] if "redis" in s)
    assert redis_status["redis"] == "down"
    assert "STREAMPROC_REDIS_PASSWORD" in redis_status["error"]
    time.sleep(2)  # the sink retries with backoff meanwhile: still one line
    lines = [line for line in worker.log().splitlines() if "STREAMPROC_REDIS_PASSWORD" in line]
    assert len(lines) == 1, lines
    assert "AuthenticationError" in lines[0] and "Traceback" not in worker.log()
    _assert_no_secret(worker.log(), body)
    assert wrong not in worker.log() and wrong not in body.decode()
