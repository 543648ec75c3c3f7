"""TLS contexts from PEM files: a file that cannot be loaded names its setting."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from streamproc.exceptions import SettingsError
from streamproc.tls import TlsFiles, client_context, server_context
from tests.support.tls import make_certs


def test_contexts_from_pem_files(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    files = TlsFiles("X", certs.ca, certs.client.cert, certs.client.key)
    client = client_context(files)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert [dict(i[0] for i in c["subject"]) for c in client.get_ca_certs()] == [
        {"commonName": "test-ca"}
    ]
    server = server_context(TlsFiles("Y", None, certs.server.cert, certs.server.key))
    assert server.verify_mode == ssl.CERT_NONE  # asks no client certificate


@pytest.mark.parametrize(
    ("which", "setting"),
    [
        ("ca", "STREAMPROC_X_CAFILE"),
        ("cert", "STREAMPROC_X_CERTFILE"),
        ("key", "STREAMPROC_X_KEYFILE"),
    ],
)
def test_a_missing_file_names_its_setting(tmp_path: Path, which: str, setting: str) -> None:
    certs = make_certs(tmp_path)
    paths = {"ca": certs.ca, "cert": certs.client.cert, "key": certs.client.key}
    paths[which] = tmp_path / "missing.pem"
    files = TlsFiles("X", paths["ca"], paths["cert"], paths["key"])
    with pytest.raises(SettingsError, match=f"^bad setting {setting}: cannot load .*missing.pem"):
        client_context(files)


def test_a_key_of_another_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    files = TlsFiles("X", None, certs.client.cert, certs.server.key)
    with pytest.raises(SettingsError, match=r"STREAMPROC_X_CERTFILE: .* does not match it"):
        client_context(files)
