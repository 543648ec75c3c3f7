"""The Faust app: a send cut short by the shutdown is cancelled quietly, not logged as ERROR."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import pytest

from streamproc.config import Settings
from streamproc.kafka.app import create_app


async def test_a_send_cancelled_by_the_shutdown_cancels_its_message(tmp_path: Path) -> None:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    topic = app.topic("t")
    sent: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    sent.cancel()
    message: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    topic._on_published(sent, message=message, producer=None, state=None)
    assert message.cancelled()
    # Faust's own callback lets CancelledError out: asyncio logs it as an ERROR traceback
    with pytest.raises(asyncio.CancelledError):
        faust.Topic._on_published(topic, sent, message=message, producer=None, state=None)


def test_the_group_session_is_the_setting_and_heartbeats_fit_three_times_in_it(
    tmp_path: Path,
) -> None:
    """tansu holds every join for half the session: 10 s made each rebalance wait 5 s."""
    default = create_app(Settings(_env_file=None, data_dir=tmp_path)).conf
    assert default.broker_session_timeout == 6.0
    slower = Settings(_env_file=None, data_dir=tmp_path, session_timeout_seconds=30)
    assert create_app(slower).conf.broker_session_timeout == 30.0
    # Kafka's rule: a heartbeat interval under a third of the session timeout.
    assert default.broker_heartbeat_interval * 3 <= default.broker_session_timeout
    # A survivor learns of a hand-over from a heartbeat's answer: a quarter second at most
    # (with 0.5 s, a SIGTERM hand-over took 3.34 - 3.92 s against its goal of 3).
    assert default.broker_heartbeat_interval <= 0.25
    with pytest.raises(ValueError, match="session_timeout_seconds"):
        Settings(_env_file=None, data_dir=tmp_path, session_timeout_seconds=2)


async def test_the_tables_start_without_faust_s_second_of_sleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's table manager sleeps 1 s before the tables start and the consumer joins
    the group: a second of every worker start, for tables declared late (none are)."""
    tables = create_app(Settings(_env_file=None, data_dir=tmp_path)).tables
    steps: list[str] = []

    async def step(name: str, *_: object) -> None:
        steps.append(name)

    monkeypatch.setattr(tables, "sleep", lambda seconds: step(f"sleep {seconds}"))
    monkeypatch.setattr(tables, "_update_channels", lambda: step("tables started"))
    monkeypatch.setattr(type(tables.recovery), "start", lambda _: step("recovery started"))
    await tables.on_start()
    assert steps == ["tables started", "recovery started"]


@pytest.mark.parametrize("idempotent", [False, True])
async def test_the_apps_producer_sends_nothing_without_the_membership_lease(
    tmp_path: Path, idempotent: bool
) -> None:
    """The fence (``kafka.lease``) is on the producer every worker write goes through."""
    from streamproc.kafka.lease import membership_lease
    from streamproc.kafka.transport import FencedProducer

    settings = Settings(_env_file=None, data_dir=tmp_path, producer_idempotence=idempotent)
    app = create_app(settings)
    assert isinstance(app.producer, FencedProducer)
    aiokafka_producer = app.producer._new_producer()  # type: ignore[attr-defined]
    drain = aiokafka_producer._message_accumulator.drain_by_nodes
    assert drain.__qualname__.startswith("fence_sends"), "the queue is drained unfenced"
    assert membership_lease(app).term == settings.session_timeout_seconds - 1.0


async def test_a_failed_send_is_logged_once_not_again_as_an_unretrieved_error(
    tmp_path: Path,
) -> None:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    topic = app.topic("t")
    sent: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    sent.set_exception(ConnectionError("refused"))
    message = topic.as_future_message(key=b"k", value=b"v")
    topic._on_published(sent, message=message, producer=None, state=None)
    assert message.done()
    assert not message._log_traceback, "asyncio would log it as an ERROR at collection"
    assert isinstance(message.exception(), ConnectionError)
