"""Every Prometheus metric of the worker, declared in one place on a registry passed in."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streamproc.kpis.catalogue import CATALOGUE, Kind, Kpi
from streamproc.kpis.compute import Sample

__all__ = [
    "PROCESSOR_METRICS",
    "LagCollector",
    "LeadCacheCollector",
    "OwnMetric",
    "ProcessorMetrics",
    "kpi_exposition",
]

CHUNK_SAMPLES = 200  # ~1 ms of formatting
DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


@dataclass(frozen=True, slots=True)
class OwnMetric:
    """One of the processor's own metrics, as exposed (``name``) and declared (``base``)."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str

    @property
    def base(self) -> str:
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


PROCESSOR_METRICS = (
    OwnMetric(
        "streamproc_events_total",
        "counter",
        ("topic", "outcome"),
        "Input messages by outcome: processed, invalid, duplicate, late",
    ),
    OwnMetric(
        "streamproc_event_delay_seconds",
        "histogram",
        (),
        "From a message's append time to its effect on the KPIs",
    ),
    OwnMetric("streamproc_alerts_total", "counter", ("kind",), "Alerts published"),
    OwnMetric(
        "streamproc_redis_up",
        "gauge",
        (),
        "1 while the Redis snapshot is reachable (or disabled)",
    ),
    OwnMetric(
        "streamproc_consumer_lag_messages",
        "gauge",
        ("topic", "partition"),
        "Messages of owned input partitions not yet committed",
    ),
    OwnMetric(
        "streamproc_lead_cache_leads",
        "gauge",
        (),
        "Leads in memory (STREAMPROC_LEAD_CACHE_SIZE, plus those not on disk yet)",
    ),
    OwnMetric(
        "streamproc_lead_cache_reads_total",
        "counter",
        (),
        "Leads read back from the data dir's disk copy (not in memory at their next use)",
    ),
)
_OWN = {m.name: m for m in PROCESSOR_METRICS}
_CREATED = (
    "streamproc_events_total",
    "streamproc_event_delay_seconds",
    "streamproc_alerts_total",
    "streamproc_redis_up",
)


@dataclass(frozen=True, slots=True)
class ProcessorMetrics:
    """The processor's own metrics; the KPI gauges are ``kpi_exposition``, built at scrape
    time from the in-memory aggregates."""

    registry: CollectorRegistry
    events: Counter
    delay: Histogram
    alerts: Counter
    redis_up: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ProcessorMetrics:
        events, delay, alerts, redis_up = (_OWN[name] for name in _CREATED)
        return cls(
            registry=registry,
            # prometheus_client adds _total to a counter's name
            events=Counter(events.base, events.help, events.labels, registry=registry),
            delay=Histogram(delay.base, delay.help, buckets=DELAY_BUCKETS, registry=registry),
            alerts=Counter(alerts.base, alerts.help, alerts.labels, registry=registry),
            redis_up=Gauge(redis_up.base, redis_up.help, registry=registry),
        )


def kpi_exposition(
    samples: Iterable[Sample], names: Collection[str] | None = None
) -> Iterator[bytes | None]:
    """The KPI gauges in the text exposition format, one family per catalogue entry (only
    those in ``names`` when given), in chunks of at most ``CHUNK_SAMPLES`` samples, with
    None after each sample read: there the caller may let the event loop run (one family
    can hold thousands of series at 100 reps: in one go, a scrape held the loop 100 - 150
    ms).

    The samples of a metric come together (the readers yield KPI by KPI), so each line is
    formatted as its sample comes and no sample outlives its chunk. Gathered in a list and
    grouped per family first, the samples were a scrape's peak: a whole scrape of the
    take-over history's 100,000 leads (28,355 series, in-process, ``tracemalloc``) peaked
    at 9.7 MiB traced, 5.3 MiB formatted as they come, most of it the text itself. The
    families without a sample follow, header only.

    The text is the one ``generate_latest`` writes (labels sorted, values escaped, floats
    as Go prints them), formatted here: through ``Metric.add_sample`` and
    ``generate_latest`` it took ~10 % of a worker's loop while a dashboard read three KPIs
    every second at 1,000 events/s (20,000 leads; py-spy), mostly label checks and
    objects the text does not need."""
    specs = {spec.name: spec for spec in CATALOGUE if names is None or spec.name in names}
    done: set[str] = set()
    current: str | None = None
    lines: list[str] = []  # the chunk under way: its samples' lines, after a family's head
    in_chunk = 0
    for sample in samples:
        if sample.metric != current:
            if current is not None:
                yield "".join(lines).encode()
            current = sample.metric
            _begin(current, specs, done)
            lines, in_chunk = [_head(specs[current])], 0
        elif in_chunk == CHUNK_SAMPLES:
            yield "".join(lines).encode()
            lines, in_chunk = [], 0
        lines.append(_sample_line(sample))
        in_chunk += 1
        yield None
    if current is not None:
        yield "".join(lines).encode()
    for name, spec in specs.items():
        if name not in done:
            yield _head(spec).encode()


def _begin(metric: str, specs: Mapping[str, Kpi], done: set[str]) -> None:
    """Start the family of ``metric``: known, wanted, and not written already (its samples
    apart would make two families of one name, which Prometheus refuses whole)."""
    if metric not in specs:
        raise ValueError(f"a sample of {metric}, which is not a KPI asked for")
    if metric in done:
        raise ValueError(f"the samples of {metric} do not come together")
    done.add(metric)


def _head(spec: Kpi) -> str:
    # Quantile series are typed summary: a gauge may not carry a "quantile" label.
    kind = "summary" if spec.kind is Kind.QUANTILES else "gauge"
    return f"# HELP {spec.name} {_escape_help(spec.help)}\n# TYPE {spec.name} {kind}\n"


# prometheus_client's own float format (+Inf, NaN, 1.2e+07), untyped there
_go_float = cast(Callable[[float], str], floatToGoString)


def _sample_line(sample: Sample) -> str:
    labels = sample.labels
    if sample.window is not None:
        labels = {**labels, "window": sample.window.name}
    value = _go_float(sample.value)
    if not labels:
        return f"{sample.metric} {value}\n"
    text = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sorted(labels.items()))
    return f"{sample.metric}{{{text}}} {value}\n"


def _escape_label_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class _ReadAtScrape(Collector):
    """A collector whose samples are read when scraped: it claims no names at register
    (the registry does not call ``collect`` ahead of a scrape)."""

    def describe(self) -> Iterator[Metric]:
        return iter(())


class LagCollector(_ReadAtScrape):
    """``streamproc_consumer_lag_messages``: end of each owned input partition minus committed."""

    def __init__(self, lags: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self._lags = lags

    def collect(self) -> Iterator[Metric]:
        own = _OWN["streamproc_consumer_lag_messages"]
        family = GaugeMetricFamily(own.name, own.help, labels=list(own.labels))
        for topic, partition, lag in self._lags():
            family.add_metric([topic, str(partition)], float(lag))
        yield family


class LeadCacheCollector(_ReadAtScrape):
    """The lead cache's size and reads from disk, read at scrape time: (leads, reads)."""

    def __init__(self, stats: Callable[[], tuple[int, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        leads, reads = self._stats()
        size, read = _OWN["streamproc_lead_cache_leads"], _OWN["streamproc_lead_cache_reads_total"]
        yield GaugeMetricFamily(size.name, size.help, value=float(leads))
        yield CounterMetricFamily(read.base, read.help, value=float(reads))
