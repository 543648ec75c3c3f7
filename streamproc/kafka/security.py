"""Kafka security from the settings: the options every aiokafka client gets, Faust's broker
credentials, a description for logs, and one line for a connection that can never work.

The password is a ``SecretStr`` in the settings; it is revealed only into the client options
here (aiokafka needs the text) and never into a log line, an error or ``/readyz``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from streamproc.config import Settings
from streamproc.tls import TlsFiles, client_context

__all__ = [
    "aiokafka_options",
    "describe",
    "explain",
    "faust_credentials",
    "kafka_tls_context",
]

SETTING = "KAFKA_SSL"


def _uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def _uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def kafka_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context of the settings, None for a plaintext protocol."""
    if not _uses_tls(settings):
        return None
    key_password = settings.kafka_ssl_key_password
    files = TlsFiles(
        SETTING,
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
        key_password=key_password.get_secret_value() if key_password else None,
    )
    return client_context(files, check_hostname=settings.kafka_ssl_check_hostname)


def _sasl(settings: Settings) -> tuple[str, str]:
    """(username, password); the settings' validation made sure both are there."""
    password = settings.kafka_sasl_password
    assert settings.kafka_sasl_username is not None and password is not None
    return settings.kafka_sasl_username, password.get_secret_value()


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """``security_protocol``, ``ssl_context`` and the ``sasl_*`` options of an aiokafka
    producer, consumer or admin client."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_tls_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if _uses_sasl(settings):
        username, password = _sasl(settings)
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = username
        options["sasl_plain_password"] = password
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same settings as Faust's ``broker_credentials`` (its consumer, producer and the
    admin requests it makes through its producer)."""
    context = kafka_tls_context(settings)
    if _uses_sasl(settings):
        username, password = _sasl(settings)
        return SASLCredentials(
            username=username,
            password=password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def describe(settings: Settings) -> str:
    """``SASL_SSL (SCRAM-SHA-512 as alice), CA file ca.pem``: for the start-up log; no secret."""
    parts: list[str] = [settings.kafka_security_protocol]
    if _uses_sasl(settings):
        parts[0] += f" ({settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username})"
    if _uses_tls(settings):
        ca = settings.kafka_ssl_cafile
        parts.append(f"CA file {ca}" if ca else "system CAs")
        if settings.kafka_ssl_certfile:
            parts.append(f"client certificate {settings.kafka_ssl_certfile}")
        if not settings.kafka_ssl_check_hostname:
            parts.append("host name not checked")
    return ", ".join(parts)


def _chain(exc: BaseException) -> str:
    """The messages of ``exc`` and its causes, lower case: where TLS alerts end up."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 5:
        parts.append(f"{type(seen).__name__} {seen}")
        seen = seen.__cause__ or seen.__context__
    return " | ".join(parts).lower()


def explain(settings: Settings, broker: str, exc: BaseException, other_side: bool) -> str | None:
    """One line naming the setting to change, for a connection to ``broker`` that no retry
    would make work (a certificate, a password, a protocol mismatch); None for the others
    (a broker down or slow). ``other_side``: the broker answered with the other protocol
    (TLS where the settings say plaintext, or the reverse)."""
    where = f"broker {broker}"
    if other_side:
        return _protocol_mismatch(settings, where)
    text = _chain(exc)
    for needs, message in _FAILURES:
        if all(word in text for word in needs):
            return message(settings, where, exc)
    return None


def _protocol_mismatch(settings: Settings, where: str) -> str:
    speaks, fix = ("plaintext", "PLAINTEXT or SASL_PLAINTEXT")
    if not _uses_tls(settings):
        speaks, fix = ("TLS", "SSL or SASL_SSL")
    protocol = f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
    return f"{where} speaks {speaks} but {protocol}: set it to {fix}"


def _wrong_name(settings: Settings, where: str, exc: BaseException) -> str:
    return (
        f"TLS to {where} failed: its certificate is not issued to that name ({exc}): use a "
        "name it holds in STREAMPROC_BROKER_URL, or STREAMPROC_KAFKA_SSL_CHECK_HOSTNAME=false"
    )


def _untrusted(settings: Settings, where: str, exc: BaseException) -> str:
    cafile = settings.kafka_ssl_cafile
    trusted = f"STREAMPROC_KAFKA_SSL_CAFILE ({cafile})" if cafile else "the system's CAs"
    return (
        f"TLS to {where} failed: its certificate is not signed by a CA in {trusted}: set "
        f"STREAMPROC_KAFKA_SSL_CAFILE to the PEM file of the CA that signed it ({exc})"
    )


def _no_client_certificate(settings: Settings, where: str, exc: BaseException) -> str:
    return (
        f"{where} asks for a client certificate (mutual TLS): set "
        "STREAMPROC_KAFKA_SSL_CERTFILE and STREAMPROC_KAFKA_SSL_KEYFILE"
    )


def _refused_certificate(settings: Settings, where: str, exc: BaseException) -> str:
    return (
        f"{where} refused the client certificate STREAMPROC_KAFKA_SSL_CERTFILE "
        f"({settings.kafka_ssl_certfile}): it is not signed by a CA the broker trusts"
    )


def _mechanism(settings: Settings, where: str, exc: BaseException) -> str:
    return (
        f"{where} does not accept SASL mechanism {settings.kafka_sasl_mechanism}: set "
        "STREAMPROC_KAFKA_SASL_MECHANISM to one it accepts (PLAIN, SCRAM-SHA-256 or "
        "SCRAM-SHA-512), or check STREAMPROC_KAFKA_SECURITY_PROTOCOL"
    )


def _login(settings: Settings, where: str, exc: BaseException) -> str:
    # The username only: the error of a refused login never carries the password.
    return (
        f"{where} refused the SASL login of {settings.kafka_sasl_username!r} "
        f"({settings.kafka_sasl_mechanism}): check STREAMPROC_KAFKA_SASL_USERNAME and "
        "STREAMPROC_KAFKA_SASL_PASSWORD"
    )


_FAILURES: list[tuple[tuple[str, ...], Callable[[Settings, str, BaseException], str]]] = [
    # (words all in the lower-case error chain, the line), first match wins
    (("certificate verify failed", "mismatch"), _wrong_name),
    (("certificate verify failed",), _untrusted),
    (("certificate required",), _no_client_certificate),
    (("unknown ca",), _refused_certificate),
    (("bad certificate",), _refused_certificate),
    (("certificate unknown",), _refused_certificate),
    (("unsupportedsaslmechanism",), _mechanism),
    (("authenticationfailed",), _login),  # SaslAuthenticationFailed, AuthenticationFailedError
]
