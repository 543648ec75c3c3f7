"""The worker's start-up checks refuse a TLS file that cannot be loaded before waiting for
the broker, with one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.exceptions import SettingsError
from streamproc.tools.net import free_port
from streamproc.worker.run import preflight


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"web_tls_certfile": "missing.pem", "web_tls_keyfile": "missing.key"}, "WEB_TLS_CERTFILE"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "missing-ca.pem"},
            "KAFKA_SSL_CAFILE",
        ),
    ],
)
async def test_an_unreadable_tls_file_stops_the_worker_before_the_broker_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], setting: str
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        web_port=free_port(),
        broker_url=f"kafka://127.0.0.1:{free_port()}",  # nothing there: never waited for
        **overrides,
    )
    with pytest.raises(SettingsError, match=f"^bad setting STREAMPROC_{setting}: cannot load"):
        await preflight(settings, broker_wait=600)
