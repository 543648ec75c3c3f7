"""Starting a production worker: wait for the broker, check the topics, run the topology."""

from __future__ import annotations

import asyncio
import logging

import faust

from streamproc.config import Settings
from streamproc.kafka.security import describe
from streamproc.kafka.topics import check_topics, wait_for_broker
from streamproc.runtime.heap import (
    collect_young_less_often,
    fix_mmap_threshold,
    freeze_after_full_collections,
    start_heap_trimmer,
)
from streamproc.serving.http import check_web_port
from streamproc.serving.web_security import WebSecurity
from streamproc.state.disk import lock_data_dir
from streamproc.worker.topology import build_topology

__all__ = ["preflight", "run_worker"]

log = logging.getLogger(__name__)
BROKER_WAIT_SECONDS = 24 * 3600.0  # a worker outlives a broker that is slow to come up


async def preflight(settings: Settings, broker_wait: float = BROKER_WAIT_SECONDS) -> frozenset[str]:
    """Refuse a busy web port, wait for the broker, then refuse topics that are missing or not
    co-partitioned: each error is one line saying what to do. Returns the optional topics
    present (``check_topics``)."""
    check_web_port(settings)
    web = WebSecurity(settings)
    web.app_options()  # a web certificate or key that cannot be loaded: one line, now
    web.peer_ssl()
    log.info("Kafka %s: %s", settings.broker_hosts, describe(settings))
    log.info("HTTP on port %d: %s", settings.web_port, web.describe())
    await wait_for_broker(settings, timeout=broker_wait)
    return await check_topics(settings)


def run_worker(settings: Settings) -> None:
    """Block running one worker until SIGTERM/SIGINT (Faust's worker stops gracefully)."""
    _lock = lock_data_dir(settings.data_dir)  # held until the process exits
    optional = asyncio.run(preflight(settings))
    fix_mmap_threshold()
    freeze_after_full_collections()
    collect_young_less_often()
    start_heap_trimmer()
    asyncio.set_event_loop(asyncio.new_event_loop())
    topology = build_topology(settings, optional=optional)
    topology.start_ahead()
    worker = faust.Worker(topology.app, loglevel=settings.log_level.upper())
    worker.execute_from_commandline()
