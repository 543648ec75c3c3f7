"""The read side of a worker: its samples for /metrics, and the series it owns, whole."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest

from streamproc.config import Settings
from streamproc.contract.targets import TargetKey
from streamproc.engine.engine import Engine
from streamproc.kpis.compute import (
    ReadContext,
    Sample,
    Summary,
    daily_attempt_targets,
    merged_whole_samples,
    split_samples,
    targets_in_force,
)
from streamproc.partials.codec import owner_partition
from streamproc.partials.owner import PartialsView
from streamproc.runtime.slices import Stretches, reading
from streamproc.serving.prometheus import kpi_exposition

__all__ = ["KpiReader"]


class KpiReader:
    """Samples of this worker: split counts of its partitions, whole series of the owner
    keys its partials partitions hold (``owned``: those partitions, now)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        view: PartialsView,
        registry: CollectorRegistry,
        owned: Callable[[], set[int]],
        targets: Callable[[], Mapping[TargetKey, float]] = dict,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self.engine = engine
        self.view = view
        self.registry = registry
        self.owned = owned

    def owns(self, key: str) -> bool:
        """Whether this worker exports the series of an owner key."""
        return owner_partition(key, self.settings.partitions) in self.owned()

    def owned_summaries(self) -> dict[str, Summary]:
        """Per owner key this worker owns, its partial summaries merged, as of the last
        publish round's refresh (rounds come every second, further apart under load)."""
        return self.view.current(self.owned())

    def owned_samples(self, now: float) -> list[Sample]:
        """Every series this worker owns, whole (counts too): for /kpis, topics and Redis."""
        return list(self.owned_samples_lazily(now))

    def owned_samples_lazily(self, now: float) -> Iterator[Sample]:
        return merged_whole_samples(
            self.owned_summaries(), self.engine.clock, self._context(now), with_counts=True
        )

    def samples(self, now: float, names: Collection[str] | None = None) -> Iterator[Sample]:
        """What /metrics shows: split counts and sums, and the whole series this worker owns
        (only the KPIs in ``names`` when given)."""
        engine = self.engine
        yield from split_samples(
            engine.partitions.values(), engine.clock, now, self.settings.label_cap, names
        )
        yield from merged_whole_samples(
            self.owned_summaries(), engine.clock, self._context(now), names=names
        )

    async def render_metrics(self, names: Collection[str] | None = None) -> bytes:
        """The /metrics body, computed and formatted in slices that let events run in
        between: in one go, a scrape held the loop ~1 s at 100,000 leads, and every event
        that came meanwhile waited. ``names``: only these KPIs, without the worker's own
        metrics (a dashboard or a probe that reads a few series every second)."""
        busy = Stretches(first=True)
        with reading():  # the publish rounds, prunes and sinks' folds wait meanwhile
            with busy:
                own = generate_latest(self.registry) if names is None else b""
            try:
                samples = self.samples(time.time(), names)
                parts = await busy.drain(kpi_exposition(samples, names))
            except RuntimeError:  # a rebalance changed the state between slices: in one go
                parts = list(kpi_exposition(self.samples(time.time(), names), names))
        return b"".join([own, *(part for part in parts if part is not None)])

    def _context(self, now: float) -> ReadContext:
        period_targets = targets_in_force(self.settings.activity_targets, self.targets())
        daily = daily_attempt_targets(period_targets)
        # reps with a daily target whose key this worker owns: their ratio is exported
        # even before their first attempt
        reps = [rep for rep in daily if self.owns(f"rep:{rep}")]
        return ReadContext(now, self.settings.label_cap, daily, reps, period_targets, self.owns)
