"""The Compose stack's alert webhook (alert-webhook/receiver.py) takes Alertmanager's JSON and
logs one line per alert."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from streamproc.tools.net import free_port, wait_port

RECEIVER = Path(__file__).resolve().parents[2] / "alert-webhook" / "receiver.py"
PAYLOAD = {  # Alertmanager's webhook body, trimmed to what the receiver reads
    "version": "4",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "LeadsOverSla", "severity": "critical", "rep": "rep-03"},
            "annotations": {"summary": "rep-03 has 4 leads past the SLA"},
        },
        {"status": "resolved", "labels": {"alertname": "StreamprocWorkerDown"}},
    ],
}


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/alerts/sales", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_each_alert_becomes_one_log_line() -> None:
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, str(RECEIVER), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        wait_port("127.0.0.1", port, timeout=10)
        assert _post(port, orjson.dumps(PAYLOAD)) == 200
        assert _post(port, b"not json") == 400
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=10)
    assert out.splitlines() == [
        f"alert webhook listening on :{port}",
        "/alerts/sales firing LeadsOverSla severity=critical rep=rep-03 "
        "rep-03 has 4 leads past the SLA",
        "/alerts/sales resolved StreamprocWorkerDown",
    ]
