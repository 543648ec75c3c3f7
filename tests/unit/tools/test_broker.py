"""The embedded broker's workers: the session timeout they join with."""

from __future__ import annotations

import pytest

from streamproc.config import Settings
from streamproc.tools.broker import EMBEDDED_SESSION_SECONDS, embedded_session


def test_workers_of_the_embedded_broker_join_with_its_shorter_session() -> None:
    settings = Settings()
    assert embedded_session(settings) == EMBEDDED_SESSION_SECONDS < settings.session_timeout_seconds
    # as the demo and the bench derive their settings: copied with the broker's address
    assert embedded_session(settings.model_copy(update={"broker_url": "localhost:1"})) == 4.0


def test_a_session_the_operator_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_SESSION_TIMEOUT_SECONDS", "6")
    assert embedded_session(Settings()) == 6.0
    assert embedded_session(Settings(session_timeout_seconds=10)) == 10.0
