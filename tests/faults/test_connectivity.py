"""The broker going away and coming back: a cut connection, and a broker that is not up yet."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from streamproc.kafka.topics import create_topics
from streamproc.tools.broker import BrokerProxy, EmbeddedBroker
from streamproc.tools.net import free_port
from tests.support.faults import (
    Feed,
    Stream,
    events_total,
    fault_settings,
    stop_all,
    verify,
    wait_settled,
)
from tests.support.harness import wait_until

pytestmark = pytest.mark.fault

CUT_SECONDS = 4.0  # shorter than the 6 s session timeout: the group survives the cut


def test_broker_connection_cut_and_restored_while_events_flow(
    broker, settings_factory, make_topics, worker_factory, kafka_producer, tmp_path, figures
) -> None:
    """Workers reach the broker through ``tansu proxy``; the proxy is killed and restarted
    on the same port while the producer (direct to the broker) keeps sending."""
    direct = fault_settings(settings_factory)
    make_topics(direct)
    proxy = BrokerProxy(broker.url, log_path=tmp_path / "proxy.log").start()
    try:
        via_proxy = direct.model_copy(update={"broker_url": proxy.url})
        stream = Stream(direct, 8_000, seed=31)
        workers: list = []
        workers += [
            worker_factory(via_proxy, name="a", ready=False),
            worker_factory(
                via_proxy.model_copy(update={"web_port": free_port()}), name="b", ready=False
            ),
        ]
        wait_settled(workers, direct.partitions)
        feed = Feed(kafka_producer(), stream.messages, rate=600, hold_back=2_000).start()

        feed.wait_for(0.25)
        proxy.stop()  # every worker connection to the broker drops at once
        figures["cut_at"] = f"{feed.mid_stream()}/{feed.total}"
        figures["cut_s"] = CUT_SECONDS
        cut_counts = _handled(workers)
        time.sleep(CUT_SECONDS)
        for worker in workers:  # alive and serving while cut off
            assert worker.get("/healthz")[0] == 200, f"{worker.name} unhealthy during the cut"
        figures["handled_during_cut"] = _handled(workers) - cut_counts
        proxy.start()
        restored = time.monotonic()
        figures["restored_at"] = f"{feed.mid_stream()}/{feed.total}"
        before = _handled(workers)
        # Reconnected by itself: processing resumes without any help.
        wait_until(lambda: _handled(workers) > before, timeout=60, interval=0.2)
        figures["resumed_after_s"] = round(time.monotonic() - restored, 2)
        feed.release()
        feed.join()
        figures["settled_s"] = wait_settled(workers, direct.partitions, timeout=90)
        verify(stream, workers, figures, connection_cut=True)
        figures["worker_errors_logged"] = {w.name: w.log().count("[ERROR]") for w in workers}
    finally:
        stop_all(workers)  # while the proxy still runs: a cut-off worker is slow to leave
        proxy.stop()


def _handled(workers) -> int:  # type: ignore[no-untyped-def]
    return int(sum(events_total(workers).values()))


def test_worker_started_before_the_broker_waits_then_works(
    settings_factory, worker_factory, kafka_producer, tmp_path, figures
) -> None:
    port = free_port()
    settings = fault_settings(settings_factory, broker_url=f"kafka://127.0.0.1:{port}")
    worker = worker_factory(settings, name="early", ready=False)
    first = f"broker {settings.broker_url} not reachable ("
    again = f"broker {settings.broker_url} still not reachable after "
    # It keeps retrying every 0.5 s, with one clear line every few seconds (not one per
    # attempt): the first names the cause and what to check, the next ones how long so far.
    wait_until(lambda: worker.log().count(again) >= 1, timeout=60, interval=0.2)
    log = worker.log()
    assert log.count(first) == 1, log[-2000:]
    figures["retry_lines_logged"] = log.count(first) + log.count(again)
    assert "Traceback" not in log, log[-2000:]
    assert worker.proc.poll() is None, "the worker gave up instead of waiting"

    # The worker refuses missing topics by design (compose runs `topics create` first); it
    # is frozen while the broker starts and the topics are created, so that it never sees
    # a broker without its topics (that race is covered in docs/reliability.md).
    os.kill(worker.proc.pid, signal.SIGSTOP)
    late = EmbeddedBroker(port, log_path=tmp_path / "late-broker.log").start()
    try:
        asyncio.run(create_topics(settings))
        up = time.monotonic()
        os.kill(worker.proc.pid, signal.SIGCONT)
        worker.wait_ready(90)
        figures["ready_after_broker_up_s"] = round(time.monotonic() - up, 2)
        stream = Stream(settings, 4_000, seed=51)
        producer = kafka_producer(bootstrap_servers=late.bootstrap_servers)
        Feed(producer, stream.messages, rate=1_500).start().join()
        verify(stream, [worker], figures)
    finally:
        worker.stop(timeout=10)
        late.stop()
