"""The worker's HTTP behind TLS and basic auth or a bearer token, the way Prometheus
exporters do it (their ``web-config``): Prometheus scrapes with ``scheme: https``,
``tls_config`` and ``basic_auth`` or ``authorization``. ``/healthz`` stays open for
orchestrators' probes; every other path (``/metrics``, ``/kpis``, ``/readyz``, Faust's own
pages) asks for the credentials. A worker asks its peers for their ``/kpis`` with the same
credentials, over HTTPS when the workers serve it."""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streamproc.config import Settings
from streamproc.tls import TlsFiles, client_context, server_context

__all__ = ["OPEN_PATHS", "WebSecurity"]

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"})
"""Paths served without credentials: a liveness probe says nothing about the sales floor."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebSecurity:
    """TLS and credentials of the worker's HTTP: the web TLS and web auth settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        password, token = settings.web_auth_password, settings.web_auth_token
        self._accepted: list[bytes] = []  # the Authorization headers that let a request in
        self._peer_ssl: ssl.SSLContext | None = None
        if settings.web_auth_username is not None and password is not None:
            pair = f"{settings.web_auth_username}:{password.get_secret_value()}".encode()
            self._accepted.append(b"Basic " + base64.b64encode(pair))
        if token is not None:
            self._accepted.append(b"Bearer " + token.get_secret_value().encode())

    @property
    def tls(self) -> bool:
        return self._settings.web_tls_certfile is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def app_options(self) -> dict[str, Any]:
        """``faust.App`` settings: the server's TLS context and the auth middleware."""
        options: dict[str, Any] = {}
        if self.tls:
            files = TlsFiles(
                "WEB_TLS", certfile=self._settings.web_tls_certfile,
                keyfile=self._settings.web_tls_keyfile,
            )  # fmt: skip
            options["web_ssl_context"] = server_context(files)
        if self._accepted:
            options["web_application_options"] = {"middlewares": [self._middleware]}
        return options

    def describe(self) -> str:
        """``https, basic auth and bearer token (open: /healthz)``: for the start-up log."""
        kinds = [k for k, on in (("basic auth", self._basic), ("bearer token", self._token)) if on]
        auth = " and ".join(kinds) + " (open: /healthz)" if kinds else "no auth"
        return f"{self.scheme}, {auth}"

    @property
    def _basic(self) -> bool:
        return any(h.startswith(b"Basic ") for h in self._accepted)

    @property
    def _token(self) -> bool:
        return any(h.startswith(b"Bearer ") for h in self._accepted)

    def peer_headers(self) -> dict[str, str]:
        """What a worker sends the other workers: the first credential it accepts itself."""
        return {"Authorization": self._accepted[0].decode()} if self._accepted else {}

    def peer_ssl(self) -> ssl.SSLContext | None:
        """The context that checks a peer's certificate (``STREAMPROC_WEB_TLS_CAFILE``)."""
        if self.tls and self._peer_ssl is None:
            files = TlsFiles("WEB_TLS", cafile=self._settings.web_tls_cafile)
            self._peer_ssl = client_context(files)
        return self._peer_ssl

    def allows(self, authorization: str | None) -> bool:
        if authorization is None:
            return False
        given = authorization.encode()
        # compare_digest against each: no early exit that would time the secret's prefix.
        return any([hmac.compare_digest(given, accepted) for accepted in self._accepted])

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or self.allows(request.headers.get("Authorization")):
            return await handler(request)
        challenge = 'Basic realm="streamproc"' if self._basic else 'Bearer realm="streamproc"'
        return web.json_response(
            {"error": "authentication required: the worker's credentials, see "
             "STREAMPROC_WEB_AUTH_USERNAME / STREAMPROC_WEB_AUTH_TOKEN"},
            status=401,
            headers={"WWW-Authenticate": challenge},
        )  # fmt: skip
