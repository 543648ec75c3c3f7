"""TLS for the tests: certificates made with the openssl CLI in a temporary directory (never
committed), and Debian's stunnel4 as the TLS terminator in front of a plaintext broker."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.support.servers import ServerProcess

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_LEAF_EXTENSIONS = """\
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, IP:127.0.0.1
"""


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, both PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    """A test CA, a server and a client certificate it signed (for localhost and 127.0.0.1),
    and a second CA that signed nothing here: the wrong CA."""

    ca: Path
    server: Pair
    client: Pair
    other_ca: Path


def _self_signed_ca(directory: Path, name: str) -> Pair:
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", pair.key, "-out", pair.cert, "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def _leaf(directory: Path, name: str, ca: Pair) -> Pair:
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    csr, extensions = directory / f"{name}.csr", directory / f"{name}.ext"
    extensions.write_text(_LEAF_EXTENSIONS)
    _openssl("req", "-new", *_KEY, "-keyout", pair.key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-out", pair.cert, "-days", "2", "-extfile", extensions,
    )  # fmt: skip
    return pair


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _self_signed_ca(directory, "test-ca")
    other = _self_signed_ca(directory, "other-ca")
    return Certs(
        ca=ca.cert,
        server=_leaf(directory, "localhost", ca),
        client=_leaf(directory, "streamproc-client", ca),
        other_ca=other.cert,
    )


class Stunnel(ServerProcess):
    """``stunnel4`` accepting TLS on ``port`` and forwarding plaintext to ``upstream_port``;
    with ``client_ca`` it asks for a client certificate signed by it and refuses others."""

    name = "stunnel"

    def __init__(
        self, port: int, upstream_port: int, server: Pair, workdir: Path, client_ca: Path | None
    ) -> None:
        super().__init__(port, workdir)
        self.upstream_port = upstream_port
        lines = [
            "foreground = yes",
            "pid =",
            "debug = notice",
            "[tls]",
            f"accept = 127.0.0.1:{port}",
            f"connect = 127.0.0.1:{upstream_port}",
            f"cert = {server.cert}",
            f"key = {server.key}",
        ]
        if client_ca is not None:
            lines += [f"CAfile = {client_ca}", "verifyChain = yes", "requireCert = yes"]
        self.config = workdir / f"stunnel-{port}.conf"
        self._lines = lines

    @staticmethod
    def binary() -> str | None:
        return shutil.which("stunnel4") or shutil.which("stunnel")

    def start(self) -> Self:
        binary = self.binary()
        assert binary is not None, "stunnel4 is not installed (scripts/test installs it)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("\n".join(self._lines) + "\n")
        self._spawn([binary, str(self.config)])
        return self
