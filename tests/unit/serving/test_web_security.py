"""Which Authorization headers the worker's HTTP lets in, and what it sends its peers."""

from __future__ import annotations

import base64
from pathlib import Path

from streamproc.config import Settings
from streamproc.serving.web_security import WebSecurity


def _basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


def test_basic_auth_and_a_token(tmp_path: Path) -> None:
    security = WebSecurity(
        Settings(
            _env_file=None,
            data_dir=tmp_path,
            web_auth_username="prometheus",
            web_auth_password="pw:with:colons",
            web_auth_token="tok",
        )
    )
    assert security.allows(_basic("prometheus:pw:with:colons"))
    assert security.allows("Bearer tok")
    for refused in (None, "", _basic("prometheus:pw"), _basic("other:pw:with:colons"),
                    "Bearer tok2", "Bearer", "bearer tok"):  # fmt: skip
        assert not security.allows(refused), refused
    assert security.peer_headers() == {"Authorization": _basic("prometheus:pw:with:colons")}
    assert "web_application_options" in security.app_options()
    assert security.describe() == "http, basic auth and bearer token (open: /healthz)"
    assert "pw:with:colons" not in repr(security.__dict__.get("_settings"))


def test_nothing_configured_is_open_plain_http(tmp_path: Path) -> None:
    security = WebSecurity(Settings(_env_file=None, data_dir=tmp_path))
    assert security.app_options() == {}
    assert security.peer_headers() == {}
    assert security.peer_ssl() is None
    assert security.describe() == "http, no auth"
