"""Every Prometheus metric of the worker, declared in one place on a registry passed in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamproc.kpis import CATALOGUE, SPECS, Sample

__all__ = ["KpiCollector", "ProcessorMetrics"]

DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


@dataclass(frozen=True, slots=True)
class ProcessorMetrics:
    """The processor's own metrics (the KPI gauges come from ``KpiCollector``)."""

    registry: CollectorRegistry
    events: Counter
    delay: Histogram
    alerts: Counter
    redis_up: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ProcessorMetrics:
        return cls(
            registry=registry,
            events=Counter(
                "streamproc_events",
                "Input messages by outcome: processed, invalid, duplicate, late",
                ["topic", "outcome"],
                registry=registry,
            ),
            delay=Histogram(
                "streamproc_event_delay_seconds",
                "From a message's append time to its effect on the KPIs",
                buckets=DELAY_BUCKETS,
                registry=registry,
            ),
            alerts=Counter("streamproc_alerts", "Alerts published", ["kind"], registry=registry),
            redis_up=Gauge(
                "streamproc_redis_up",
                "1 while the Redis snapshot is reachable (or disabled)",
                registry=registry,
            ),
        )


class KpiCollector(Collector):
    """Builds the KPI gauges from in-memory aggregates at scrape time: nothing per event."""

    def __init__(self, samples: Callable[[float], Iterable[Sample]]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for spec in CATALOGUE:
            labels = ["window", *spec.labels] if spec.windowed else list(spec.labels)
            families[spec.name] = GaugeMetricFamily(spec.name, spec.help, labels=labels)
        for sample in self._samples(time.time()):
            spec = SPECS[sample.metric]
            values = [sample.labels[name] for name in spec.labels]
            if spec.windowed:
                values.insert(0, sample.window.name if sample.window else "")
            families[sample.metric].add_metric(values, sample.value)
        yield from families.values()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
