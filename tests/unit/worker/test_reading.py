"""A scrape shares the event loop with the events: it computes and formats in slices."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproc.config import Settings
from streamproc.contract.events import EventKind
from streamproc.engine.engine import RawMessage
from streamproc.kpis.catalogue import CATALOGUE
from streamproc.kpis.compute import Sample
from streamproc.runtime import slices
from streamproc.runtime.slices import SLICE_SECONDS, Stretches, run_in_slices
from streamproc.serving.prometheus import CHUNK_SAMPLES, kpi_exposition
from streamproc.tools.sales_team import rfc3339
from streamproc.worker.topology import Topology


def _slow_samples(n: int, each: float) -> Iterator[Sample]:
    for i in range(n):
        time.sleep(each)  # a costly merge, synchronous like the real ones
        yield Sample("sales_leads_created", {"source": f"s{i}"}, None, float(i))


async def test_a_scrape_lets_the_event_loop_run_while_it_computes(tmp_path: Path) -> None:
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    topology.reader.samples = lambda now, names=None: _slow_samples(10, SLICE_SECONDS)  # type: ignore[method-assign]
    ticks: list[float] = []

    async def events() -> None:  # stands for the batch handler
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0)

    await topology.render_metrics()  # once before: one-time costs (imports) are not slicing
    ticking = asyncio.create_task(events())
    await asyncio.sleep(0)
    started = time.perf_counter()
    body = await topology.render_metrics()
    ended = time.perf_counter()
    ticking.cancel()
    during = [t for t in ticks if started < t < ended]
    assert len(during) >= 4, f"the loop ran {len(during)} times in a {ended - started:.2f}s scrape"
    longest = max(b - a for a, b in zip([started, *during], [*during, ended], strict=True))
    assert longest < 6 * SLICE_SECONDS, f"the loop was held {longest:.3f}s"
    values = {
        s.labels["source"]: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "sales_leads_created"
    }
    assert values == {f"s{i}": float(i) for i in range(10)}
    names = [family.name for family in text_string_to_metric_families(body.decode())]
    assert len(names) == len(set(names)), "a family rendered twice"
    assert "streamproc_events" in names, "the processor's own metrics are missing"
    topology.reader.samples = lambda now, names=None: _slow_samples(1, 0.0)  # type: ignore[method-assign]
    again = (await topology.render_metrics()).decode()
    assert 'sales_leads_created{source="s0"} 0.0' in again
    assert 's1"' not in again, "a later scrape showed the earlier samples"


async def test_a_publish_round_waits_for_the_scrape_under_way(tmp_path: Path) -> None:
    """A take-over's first scrape shared the loop with the first publish round (which
    computes every owned series for the sinks): it took 0.34 - 0.88 s for ~0.3 s of CPU."""
    topology = Topology(Settings(_env_file=None, data_dir=tmp_path))
    steps: list[str] = []

    def samples(now: float, names: object = None) -> Iterator[Sample]:
        for sample in _slow_samples(20, SLICE_SECONDS):
            steps.append("scrape")
            yield sample

    topology.reader.samples = samples  # type: ignore[method-assign]

    async def publish_round() -> None:
        busy = Stretches()
        while True:
            with busy:
                time.sleep(SLICE_SECONDS)
            steps.append("round")
            await busy.pause()

    rounds = asyncio.create_task(publish_round())
    await asyncio.sleep(0)
    body = await topology.render_metrics()
    await asyncio.sleep(10 * SLICE_SECONDS)
    rounds.cancel()
    first, last = steps.index("scrape"), len(steps) - 1 - steps[::-1].index("scrape")
    during = steps[first:last]
    assert "round" not in during, f"a round ran {during.count('round')} stretches meanwhile"
    assert "round" in steps[:first], "the round ran before the scrape"
    assert "round" in steps[last:], "and after it"
    assert b'sales_leads_created{source="s19"} 19.0' in body


def test_a_family_formatted_in_chunks_is_one_family_with_every_sample() -> None:
    samples = [
        Sample("sales_leads_created", {"source": f"s{i}"}, None, float(i))
        for i in range(2 * CHUNK_SAMPLES + 50)
    ]
    text = b"".join(part for part in kpi_exposition(samples) if part is not None).decode()
    assert text.count("# HELP sales_leads_created ") == 1
    assert text.count("# TYPE sales_leads_created ") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    got = {s.labels["source"]: s.value for s in families["sales_leads_created"].samples}
    assert got == {f"s{i}": float(i) for i in range(len(samples))}
    assert len(families) == len(CATALOGUE)  # every family, with samples or without


@pytest.mark.parametrize("events_flow", [True, False])
async def test_background_work_sleeps_a_slice_between_its_stretches_while_events_flow(
    monkeypatch: pytest.MonkeyPatch, events_flow: bool
) -> None:
    """Each step of a batch (a fetch, a changelog round trip) is a turn of the loop: while
    events flow, a background stretch runs at most every other slice, not before each of
    the batch's steps, and in between the loop's thread leaves the interpreter to other
    threads. With no event for ``QUIET_SECONDS`` (a take-over's recovery and first scrape)
    it only yields between its stretches: nothing else waits for the loop."""
    monkeypatch.setattr(slices, "_last_events", -math.inf)
    if events_flow:
        slices.events_seen()
    stretches = 0

    def background() -> Iterator[None]:
        nonlocal stretches
        while True:
            time.sleep(SLICE_SECONDS)  # a stretch of a publish round or a scrape
            stretches += 1
            yield None

    working = asyncio.create_task(run_in_slices(background()))
    await asyncio.sleep(2 * SLICE_SECONDS)  # the stretch under way ends
    before = stretches
    for _ in range(40):
        await asyncio.sleep(0)  # the batch's steps, each a turn of the loop
    given_way = stretches - before
    await asyncio.sleep(20 * SLICE_SECONDS)
    later = stretches - before - given_way
    working.cancel()
    if events_flow:
        assert given_way <= 4, f"{given_way} stretches ran before 40 steps of a batch"
    else:
        assert given_way >= 20, f"{given_way} stretches in 40 turns: it slept, idle"
    assert later >= 3, f"the background ran {later} stretches in 20 slices: it must go on"


async def test_a_scrape_filtered_by_name_renders_those_kpis_alone(tmp_path: Path) -> None:
    """A dashboard or the bench's freshness probe reads a few series every second; a whole
    render computes every series (~1 s of the loop at 100,000 leads)."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    topology = Topology(settings)
    created = {
        "event_id": "e1",
        "occurred_at": rfc3339(time.time() - 60),
        "lead_id": "l1",
        "rep_id": "r1",
        "source": "web",
    }
    raw = orjson.dumps(created)
    kind, topic = EventKind.LEAD_CREATED, settings.topic("lead-created")
    topology.engine.process([RawMessage(kind, topic, 0, 0, b"l1", raw, None)], time.time())
    whole = await topology.render_metrics()
    only = await topology.render_metrics(frozenset({"sales_leads_created"}))
    families = {f.name for f in text_string_to_metric_families(only.decode())}
    assert families == {"sales_leads_created"}
    assert b'sales_leads_created{rep="r1",source="web",window="1h"} 1.0' in only
    assert only in whole  # the same lines as in the whole scrape
