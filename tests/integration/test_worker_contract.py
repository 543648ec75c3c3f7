"""The worker's outside: /metrics lints clean, probes answer, bad topics and settings stop it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import child_env
from tests.support.harness import wait_until
from tests.support.scenario import Scenario

pytestmark = pytest.mark.integration


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool missing: the README's test command installs Debian's prometheus")
    return path


def test_metrics_pass_promtool_check_metrics(
    settings_factory, make_topics, worker_factory, kafka_producer
) -> None:
    settings = settings_factory(activity_targets={"r1": 10})
    make_topics(settings)
    worker = worker_factory(settings)
    producer = kafka_producer()
    for topic, key, value in Scenario().messages(settings.topic_prefix):
        producer.produce(topic, key=key, value=value)
    producer.flush(10)
    wait_until(lambda: "sales_stage_conversion_ratio{" in worker.metrics_text(), timeout=30)
    text = worker.metrics_text()
    result = subprocess.run(
        [_promtool(), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert worker.get("/healthz")[0] == 200
    # every metric a worker exports is documented
    documented = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    exported = {f.name for f in text_string_to_metric_families(text)}
    assert len(exported) > 20

    def documents(name: str) -> bool:
        # the parser drops a counter's _total; prometheus_client adds a _created per counter
        base = name.removesuffix("_created")
        return any(f"`{n}`" in documented for n in (name, base, f"{base}_total"))

    assert not [name for name in sorted(exported) if not documents(name)]

    def lag() -> float:
        return sum(
            v
            for (name, _), v in worker.samples().items()
            if name == "streamproc_consumer_lag_messages"
        )

    # offsets get committed (a never-committed partition starts at the log's first offset)
    wait_until(lambda: lag() == 0, timeout=30)
    status, body = worker.get("/readyz")
    assert status == 200 and orjson.loads(body)["ready"] is True
    # alone in its group, the worker owns every input partition
    assert orjson.loads(body)["partitions"] == list(range(settings.partitions))
    # a clean stop logs no ERROR (it used to: Topic._on_published ... CancelledError)
    assert worker.stop() == 0
    errors = [line for line in worker.log().splitlines() if "ERROR" in line]
    assert not errors, errors


def _run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streamproc", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_worker_refuses_missing_topics_naming_them(settings_factory) -> None:
    settings = settings_factory()
    result = _run_worker(child_env(settings))
    assert result.returncode == 2
    err = result.stderr.decode().strip().splitlines()[-1]
    assert settings.topic("lead-created") in err and settings.topic("email-opened") in err


def test_worker_refuses_topics_not_co_partitioned(settings_factory, make_topics) -> None:
    settings = settings_factory(partitions=4)
    make_topics(settings)
    other = settings.model_copy(update={"partitions": 2})
    result = _run_worker(child_env(other))
    assert result.returncode == 2
    assert "partitions" in result.stderr.decode().strip().splitlines()[-1]


def test_bad_setting_stops_start_up_with_one_line(settings_factory) -> None:
    env = child_env(settings_factory())
    env["STREAMPROC_TIMEZONE"] = "Mars/Olympus"
    result = _run_worker(env)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [
        "streamproc: bad setting STREAMPROC_TIMEZONE: unknown time zone 'Mars/Olympus'"
    ]


def test_worker_refuses_a_busy_web_port_naming_the_setting(settings_factory) -> None:
    settings = settings_factory()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.web_port))
        taken.listen()
        result = _run_worker(child_env(settings))
    assert result.returncode == 2
    port = settings.web_port
    assert result.stderr.decode().strip().splitlines()[-1] == (
        f"streamproc: the web port 127.0.0.1:{port} is already in use: stop what listens there "
        f"or set STREAMPROC_WEB_PORT to a free port (e.g. STREAMPROC_WEB_PORT={port + 1})"
    )
