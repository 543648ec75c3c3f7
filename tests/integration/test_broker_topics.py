"""The embedded broker, the proxy, and topic creation and checks against a real tansu."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from confluent_kafka import Producer

from streamproc.config import Settings
from streamproc.exceptions import BrokerError, BrokerUnreachable, TopicsError
from streamproc.kafka.topics import check_topics, create_topics, topic_names, wait_for_broker
from streamproc.tools.broker import BrokerProxy, EmbeddedBroker
from streamproc.tools.net import free_port

pytestmark = pytest.mark.integration

SettingsFactory = Callable[..., Settings]


@asynccontextmanager
async def _consumer(servers: str, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of partition 0 from the start; ``assign`` avoids a slow group join."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        yield consumer
    finally:
        await consumer.stop()


async def _take(consumer: AIOKafkaConsumer, count: int, timeout: float = 10) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(values) < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)
        values += [m.value for msgs in batches.values() for m in msgs if m.value is not None]
    return values


async def _consume(servers: str, topic: str, count: int) -> list[bytes]:
    async with _consumer(servers, topic) as consumer:
        return await _take(consumer, count)


async def _create(settings: Settings, topics: dict[str, int]) -> None:
    """Create topics by hand, ``name -> partitions``, bypassing create_topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker_hosts)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
    finally:
        await admin.close()


async def _describe(settings: Settings) -> tuple[dict[str, int], dict[str, str]]:
    """Partition count of every topic, and ``cleanup.policy`` of this prefix's topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker_hosts)
    await admin.start()
    try:
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        mine = [n for n in counts if n.startswith(settings.topic_prefix)]
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in mine]
        policies = {}
        for response in await admin.describe_configs(resources):
            for _code, _msg, _type, name, entries in response.resources:
                values = {entry[0]: entry[1] for entry in entries}
                policies[name] = values.get("cleanup.policy", "delete")
        return counts, policies
    finally:
        await admin.close()


def test_topic_names_follow_the_prefix(settings_factory: SettingsFactory) -> None:
    names = topic_names(settings_factory(topic_prefix="acme."))
    assert names.inputs["stage-changed"] == "acme.stage-changed"
    assert names.metrics["response-time"] == "acme.metrics.response-time"
    assert names.partials == "acme.internal.partials"
    assert names.business["nps-responded"] == "acme.nps-responded"
    assert names.customers == "acme.internal.customers"
    assert names.metrics["customers"] == "acme.metrics.customers"
    assert names.targets == "acme.targets"
    assert names.snapshots == "acme.internal.snapshots"
    # inputs, business inputs, internal customers, dead letters and alerts, metrics,
    # partials, targets, snapshots
    assert len(set(names.all())) == 4 + 3 + 1 + 2 + 5 + 1 + 1 + 1
    compacted = {*names.metrics.values(), names.partials, names.targets, names.snapshots}
    assert set(names.compacted) == compacted


async def test_external_producer_round_trip_to_aiokafka(
    settings_factory: SettingsFactory, kafka_producer: Callable[..., Producer]
) -> None:
    settings = settings_factory()
    topic = settings.topic("round-trip")
    await _create(settings, {topic: 1})
    producer = kafka_producer()
    for i in range(3):
        producer.produce(topic, key=b"lead-1", value=f"v{i}".encode())
    assert producer.flush(10) == 0
    assert await _consume(settings.broker_hosts, topic, 3) == [b"v0", b"v1", b"v2"]


async def test_create_topics_is_idempotent(settings_factory: SettingsFactory) -> None:
    settings = settings_factory(partitions=3)
    names = topic_names(settings)
    assert sorted(await create_topics(settings)) == sorted(names.all())
    assert await create_topics(settings) == []
    optional = {*names.business.values(), names.customers, names.snapshots}
    assert await check_topics(settings) == optional
    counts, policies = await _describe(settings)
    assert {counts[n] for n in names.all()} == {3}
    assert {n for n, p in policies.items() if p == "compact"} == set(names.compacted)


async def test_business_topics_are_optional_but_need_the_customers_topic(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(partitions=2)
    names = topic_names(settings)
    await _create(settings, dict.fromkeys([*names.inputs.values(), names.partials], 2))
    assert await check_topics(settings) == frozenset()  # the four lead topics: as before
    # any partition count: the worker repartitions them by customer
    await _create(settings, {names.business["nps-responded"]: 5})
    with pytest.raises(TopicsError) as caught:
        await check_topics(settings)
    assert f"need {names.customers}" in str(caught.value)
    await _create(settings, {names.customers: 2})
    assert await check_topics(settings) == {names.business["nps-responded"], names.customers}


async def test_the_snapshots_topic_is_optional_and_co_partitioned(
    settings_factory: SettingsFactory,
) -> None:
    """Without it a take-over derives the aggregates; with another count its partition N
    would not hold partition N's snapshot."""
    settings = settings_factory(partitions=2)
    names = topic_names(settings)
    await _create(settings, dict.fromkeys(names.inputs.values(), 2))
    assert await check_topics(settings) == frozenset()
    await _create(settings, {names.snapshots: 3})
    with pytest.raises(TopicsError) as caught:
        await check_topics(settings)
    assert names.snapshots in str(caught.value)
    assert "streamproc topics create" in str(caught.value)


async def test_check_topics_names_every_missing_input(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    names = topic_names(settings)
    await _create(settings, {names.inputs["lead-created"]: 4, names.inputs["stage-changed"]: 4})
    with pytest.raises(TopicsError) as caught:
        await check_topics(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert f"missing input topics: {settings.topic('contact-attempted')}" in message
    assert settings.topic("email-opened") in message
    assert "run `streamproc topics create`" in message
    counts, _ = await _describe(settings)
    assert settings.topic("email-opened") not in counts, "the check must not auto-create"


async def test_check_topics_names_mismatched_partition_counts(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(partitions=4)
    odd = settings.topic("stage-changed")
    await _create(settings, {odd: 8})
    created = await create_topics(settings)
    assert odd not in created, "an existing topic is left alone"
    with pytest.raises(TopicsError) as caught:
        await check_topics(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("topics not co-partitioned: ")
    assert f"{settings.topic('lead-created')}, " in message
    assert "have 4 partitions" in message
    assert f"{odd} has 8;" in message
    assert message.endswith(f"; delete {odd} and run `streamproc topics create`")


async def test_check_topics_flags_a_count_other_than_the_setting(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(partitions=2)
    await create_topics(settings)
    wider = settings_factory(topic_prefix=settings.topic_prefix, partitions=4)
    with pytest.raises(TopicsError) as caught:
        await check_topics(wider)
    message = str(caught.value)
    assert message.startswith("topics have 2 partitions but STREAMPROC_PARTITIONS=4: ")
    assert message.endswith("(or set STREAMPROC_PARTITIONS=2 first)")


async def test_wait_for_broker_returns_when_up(settings_factory: SettingsFactory) -> None:
    started = time.monotonic()
    await asyncio.wait_for(wait_for_broker(settings_factory(), timeout=5), 5)
    # at once, not after a retry (the first retry comes 0.5 s after a failed probe)
    assert time.monotonic() - started < 0.5


async def test_wait_for_broker_logs_and_gives_up(
    settings_factory: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_factory(broker_url=f"kafka://127.0.0.1:{free_port()}")
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as caught:
        await wait_for_broker(settings, timeout=2.2, log_every=1.0)
    assert time.monotonic() - started < 6
    assert str(caught.value) == (
        f"broker {settings.broker_url} not reachable after 2.2s (connection refused): "
        "is it running, and does STREAMPROC_BROKER_URL point at it?"
    )
    ours = [r.getMessage() for r in caplog.records if r.name == "streamproc.kafka.topics"]
    # one line saying what to check, then a shorter one every log_every seconds
    assert ours[0].startswith(f"broker {settings.broker_url} not reachable (connection refused)")
    assert "STREAMPROC_BROKER_URL" in ours[0]
    assert 2 <= len(ours) <= 4 and "still not reachable after" in ours[1]
    # aiokafka's own ERROR line per attempt (every 0.5 s) is swallowed
    assert not [r for r in caplog.records if r.name.startswith("aiokafka")]


async def test_wait_for_broker_waits_for_a_late_broker(settings_factory: SettingsFactory) -> None:
    late = EmbeddedBroker()
    settings = settings_factory(broker_url=late.url)
    # Started from the loop's own thread: the parent-death signal follows the forking thread.
    asyncio.get_running_loop().call_later(0.7, late.start)
    try:
        await wait_for_broker(settings, timeout=10)
        assert late.running
    finally:
        late.stop()


def test_broker_refuses_a_port_in_use(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=f"{broker.bootstrap_servers} is in use"):
        EmbeddedBroker(broker.port).start()


def test_broker_reports_an_early_exit(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="exited with code 1 before listening"):
        EmbeddedBroker(binary="/bin/false", log_path=tmp_path / "b.log").start()


def test_broker_context_manager_stops_it() -> None:
    with EmbeddedBroker() as embedded:
        assert embedded.running
        assert embedded.url == f"kafka://127.0.0.1:{embedded.port}"
        log_path = embedded.log_path
    assert not embedded.running
    assert log_path is not None and not log_path.exists(), "its temporary log is removed"


_ORPHAN = """
import sys, time
from pathlib import Path
from streamproc.tools.broker import EmbeddedBroker
print(EmbeddedBroker(log_path=Path(sys.argv[1])).start().pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running and not a zombie (a killed orphan may wait a while to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_DEATHSIG is Linux")
def test_broker_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", _ORPHAN, str(tmp_path / "broker.log")]
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the broker outlived its SIGKILLed parent"


async def test_proxy_forwards_and_clients_reconnect_after_restart(
    broker: EmbeddedBroker,
    settings_factory: SettingsFactory,
    kafka_producer: Callable[..., Producer],
) -> None:
    settings = settings_factory()
    topic = settings.topic("through-proxy")
    await _create(settings, {topic: 1})
    async with _consumer(broker.bootstrap_servers, topic) as direct:
        with BrokerProxy(broker.url) as proxy:
            await _through_an_outage(proxy, topic, kafka_producer)
        # The broker kept everything; nothing was duplicated by the producer's retries.
        assert await _take(direct, 2) == [b"before", b"during"]


async def _through_an_outage(
    proxy: BrokerProxy, topic: str, kafka_producer: Callable[..., Producer]
) -> None:
    # Short reconnect backoff: librdkafka's default grows to 10 s after a few failures.
    config = {"reconnect.backoff.max.ms": 200}
    producer = kafka_producer(config, bootstrap_servers=proxy.bootstrap_servers)
    async with _consumer(proxy.bootstrap_servers, topic) as consumer:
        producer.produce(topic, value=b"before")
        assert producer.flush(10) == 0
        assert await _take(consumer, 1) == [b"before"]

        proxy.stop()
        producer.produce(topic, value=b"during")
        assert producer.flush(0.5) == 1, "nothing gets through a stopped proxy"
        proxy.start()
        assert producer.flush(10) == 0
        assert await _take(consumer, 1) == [b"during"], "the consumer reconnected"
