"""A real Prometheus (Debian's package) scraping a worker, for the tests that query it."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamproc.tools.net import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "prometheus" / "rules" / "streamproc-alerts.yml"


class Prometheus:
    """Scrapes ``target`` every second as job ``streamproc``, with the alert rules loaded;
    ``scrape`` adds to the job's scrape config (``scheme``, ``tls_config``, ``basic_auth``)."""

    def __init__(self, workdir: Path, target: str, scrape: dict[str, Any] | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus missing: the README's test command installs Debian's package")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        job = {"job_name": "streamproc", "static_configs": [{"targets": [target]}]}
        body = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{**job, **(scrape or {})}],
        }
        config.write_text(json.dumps(body, indent=1))  # JSON is YAML
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_port("127.0.0.1", self.port, timeout=30)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = orjson.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()
