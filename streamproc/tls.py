"""TLS contexts from PEM files, for every client and server streamproc opens (Kafka, Redis,
the worker's HTTP). A file that cannot be loaded is a ``SettingsError`` naming its setting."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamproc.exceptions import SettingsError

__all__ = ["TlsFiles", "client_context", "server_context"]


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one connection, and the prefix of the settings that name them
    without ``STREAMPROC_`` (``KAFKA_SSL``: ``STREAMPROC_KAFKA_SSL_CAFILE``...)."""

    setting: str
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: str | None = None


def client_context(files: TlsFiles, *, check_hostname: bool = True) -> ssl.SSLContext:
    """Verifies the server against ``cafile`` only (else the system's CAs), as Kafka's and
    Redis' clients do; presents the client certificate if one is given (mutual TLS)."""
    contexts: list[ssl.SSLContext] = []
    cafile = files.cafile

    def create() -> None:
        contexts.append(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile))

    if cafile is None:
        create()
    else:
        _load(files, "CAFILE", cafile, create)
    context = contexts[0]
    context.check_hostname = check_hostname
    _load_chain(context, files)
    return context


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """Serves ``certfile`` with ``keyfile``; asks no client certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, files)
    return context


def _load_chain(context: ssl.SSLContext, files: TlsFiles) -> None:
    if files.certfile is None or files.keyfile is None:
        return
    certfile, keyfile = files.certfile, files.keyfile
    for name, path in (("CERTFILE", certfile), ("KEYFILE", keyfile)):
        _load(files, name, path, path.read_bytes)  # which of the two is unreadable
    _load(
        files,
        "CERTFILE",
        certfile,
        lambda: context.load_cert_chain(certfile, keyfile, password=files.key_password),
        also=f" (or STREAMPROC_{files.setting}_KEYFILE {keyfile} does not match it)",
    )


def _load(
    files: TlsFiles, name: str, path: Path, load: Callable[[], object], also: str = ""
) -> None:
    try:
        load()
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(
            f"bad setting STREAMPROC_{files.setting}_{name}: cannot load {path}: {reason}{also}"
        ) from None
