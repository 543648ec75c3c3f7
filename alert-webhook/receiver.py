"""The Compose stack's alert webhook: Alertmanager posts here; each alert becomes one log
line (``docker compose logs -f alert-webhook``). Standard library only, so it runs on the
plain python image. Replace it with your chat or paging bridge: Alertmanager's webhook
JSON arrives at /alerts/sales (sales SLA alerts) and /alerts/ops (the processor's health)."""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def lines(route: str, payload: dict) -> list[str]:
    """One line per alert: route, status, name, the labels that say who, and the summary."""
    out = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        who = " ".join(
            f"{key}={labels[key]}"
            for key in ("severity", "rep", "team", "instance")
            if key in labels
        )
        summary = alert.get("annotations", {}).get("summary", "")
        parts = (route, alert.get("status", "?"), labels.get("alertname", "?"), who, summary)
        out.append(" ".join(part for part in parts if part))
    return out


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            payload = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        for line in lines(self.path, payload):
            print(line, flush=True)  # noqa: T201 - the container's log is the output
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """The alert lines say it all: no access log."""


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8080"))
    print(f"alert webhook listening on :{port}", flush=True)  # noqa: T201
    ThreadingHTTPServer(("0.0.0.0", port), Receiver).serve_forever()
