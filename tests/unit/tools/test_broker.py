"""The benchmark's workers on its embedded broker: the session timeout they join with."""

from __future__ import annotations

import pytest

from streamproc.config import Settings
from streamproc.tools.broker import EMBEDDED_SESSION_SECONDS, embedded_session


def test_workers_of_the_embedded_broker_join_with_its_shorter_session() -> None:
    settings = Settings(_env_file=None)
    assert embedded_session(settings) == EMBEDDED_SESSION_SECONDS < settings.session_timeout_seconds
    # as the bench derives its settings: copied with the broker's address
    copied = settings.model_copy(update={"broker_url": "localhost:1"})
    assert embedded_session(copied) == EMBEDDED_SESSION_SECONDS


def test_a_session_the_operator_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_SESSION_TIMEOUT_SECONDS", "6")
    settings = Settings(_env_file=None)
    assert embedded_session(settings.model_copy(update={"broker_url": "localhost:1"})) == 6.0
    assert embedded_session(Settings(_env_file=None, session_timeout_seconds=10)) == 10.0
