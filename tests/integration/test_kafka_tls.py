"""A Kafka that only speaks TLS (tansu behind stunnel, asking for a client certificate):
the worker, ``topics create``, ``replay`` and ``simulate`` all go through it with exact
KPIs, and a wrong CA, a missing client certificate or a SASL login the broker does not take
each stop the command with one line naming the setting and the broker."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamproc.config import Settings
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

pytestmark = pytest.mark.integration

PASSWORD = "kafka-Pa55-never-shown"


def test_worker_and_commands_through_mutual_tls(
    tls_broker: TlsBroker,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = settings_factory(**tls_broker.settings())
    created = run_cli(settings, "topics", "create", "--wait", "20")
    assert created.returncode == 0, created.stderr
    assert "topics created: " + settings.topic("lead-created") in created.stderr

    events = list(history(settings, 300, 30, 2 * 86400.0, reps=4, seed=11))
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"type": k, "event": e}) for k, e in events) + b"\n")
    replayed = run_cli(settings, "replay", "--no-progress", str(path))
    assert replayed.returncode == 0, replayed.stderr
    assert "300 lines, 300 events sent" in replayed.stderr

    worker = worker_factory(settings)
    assert f"Kafka 127.0.0.1:{tls_broker.port}: SSL, CA file" in worker.log()
    wait_until(lambda: event_counts(worker).get("processed") == 300, timeout=60)
    assert leads_created_7d(worker) == sum(1 for kind, _ in events if kind == "lead-created")

    simulated = run_cli(settings, "simulate", "--rate", "40", "--duration", "3", "--seed", "5")
    assert simulated.returncode == 0, simulated.stderr
    sent = int(re.findall(r"simulation sent (\d+) events", simulated.stderr)[-1])
    assert sent > 60
    wait_until(lambda: event_counts(worker).get("processed") == 300 + sent, timeout=60)
    assert event_counts(worker) == {"processed": 300.0 + sent}  # nothing invalid, nothing twice


def _one_line_failure(done: subprocess.CompletedProcess[str], *names: str) -> str:
    """The command failed at once with exit code 2 and one ``streamproc:`` line naming
    ``names``; no traceback, no retry loop, no password."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = [line for line in done.stderr.splitlines() if line.startswith("streamproc: ")]
    assert len(lines) == 1, output
    for name in names:
        assert name in lines[0], lines[0]
    assert "Traceback" not in output
    assert "retrying" not in output
    assert PASSWORD not in output
    return lines[0]


def test_a_wrong_ca_stops_the_worker_with_one_line(
    tls_broker: TlsBroker,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(
        **{**tls_broker.settings(), "kafka_ssl_cafile": tls_broker.certs.other_ca}
    )
    worker = worker_factory(settings, ready=False)
    assert worker.proc.wait(30) == 2
    done = subprocess.CompletedProcess([], 2, "", worker.log())
    line = _one_line_failure(
        done, "STREAMPROC_KAFKA_SSL_CAFILE", f"broker 127.0.0.1:{tls_broker.port}"
    )
    assert "certificate verify failed" in line


def test_a_missing_client_certificate_stops_topics_create_with_one_line(
    tls_broker: TlsBroker, settings_factory: Callable[..., Settings]
) -> None:
    overrides = {**tls_broker.settings(), "kafka_ssl_certfile": None, "kafka_ssl_keyfile": None}
    done = run_cli(settings_factory(**overrides), "topics", "create", "--wait", "20")
    _one_line_failure(done, "STREAMPROC_KAFKA_SSL_CERTFILE", f"broker 127.0.0.1:{tls_broker.port}")


def test_plaintext_against_the_tls_port_is_one_line(
    tls_broker: TlsBroker, settings_factory: Callable[..., Settings]
) -> None:
    done = run_cli(settings_factory(broker_url=tls_broker.url), "replay", "--create-topics", "-")
    _one_line_failure(done, "STREAMPROC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT", "speaks TLS")


def test_a_sasl_login_the_broker_refuses_never_shows_the_password(
    tls_broker: TlsBroker,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """tansu takes no SASL login: the mechanism is refused, and neither ``topics create``,
    ``simulate``, ``targets list`` nor the worker (at debug level) shows the password."""
    sasl = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-256",
        "kafka_sasl_username": "streamproc",
        "kafka_sasl_password": PASSWORD,
        "log_level": "debug",
    }
    settings = settings_factory(**{**tls_broker.settings(), **sasl})
    commands = (["topics", "create", "--wait", "20"], ["simulate", "--duration", "2"])
    for args in (*commands, ["targets", "list"]):
        done = run_cli(settings, *args)
        _one_line_failure(done, "STREAMPROC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    worker = worker_factory(settings, ready=False)
    assert worker.proc.wait(30) == 2
    worker_run = subprocess.CompletedProcess([], 2, "", worker.log())
    _one_line_failure(worker_run, "STREAMPROC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")


def test_a_first_bootstrap_broker_that_is_down_does_not_stop_the_others(
    tls_broker: TlsBroker, settings_factory: Callable[..., Settings]
) -> None:
    down = f"127.0.0.1:{free_port()}"
    url = f"kafka://{down};127.0.0.1:{tls_broker.port}"
    done = run_cli(
        settings_factory(**{**tls_broker.settings(), "broker_url": url}), "topics", "create"
    )
    assert done.returncode == 0, done.stderr
