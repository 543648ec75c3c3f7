"""The KPI exposition: the text prometheus_client itself would write, byte for byte."""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

from streamproc.engine.windows import WindowBounds
from streamproc.kpis.catalogue import CATALOGUE, Kind
from streamproc.kpis.compute import Sample
from streamproc.serving.prometheus import CHUNK_SAMPLES, kpi_exposition

RATIO = next(spec for spec in CATALOGUE if spec.kind is Kind.RATIO)
QUANTILES = next(spec for spec in CATALOGUE if spec.kind is Kind.QUANTILES)
MONTH = WindowBounds("month", 0.0, 1.0, "M", 0, 0)


class _Family:
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


def _by_prometheus_client(samples: list[Sample], names: set[str]) -> bytes:
    """The oracle: each family through ``Metric.add_sample`` and ``generate_latest``."""
    out = b""
    for spec in CATALOGUE:
        if spec.name not in names:
            continue
        kind = "summary" if spec.kind is Kind.QUANTILES else "gauge"
        family = Metric(spec.name, spec.help, kind)
        for sample in samples:
            if sample.metric == spec.name:
                labels = dict(sample.labels)
                if sample.window is not None:
                    labels["window"] = sample.window.name
                family.add_sample(sample.metric, labels, sample.value)
        out += generate_latest(_Family(family))
    return out


def _ours(samples: list[Sample], names: set[str]) -> bytes:
    return b"".join(part for part in kpi_exposition(samples, names) if part is not None)


label_values = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ['a"b', "back\\slash", "new\nline", 'all\\"\n', "é€😀", ""]
)
values = st.floats(allow_nan=True) | st.sampled_from(
    [0.0, -0.0, 1.0, 1e7, 12345678.9, 1e-7, math.inf, -math.inf, 2.0**60]
)


@given(st.lists(st.tuples(label_values, values, st.booleans()), max_size=30))
def test_the_text_is_prometheus_clients_own(rows: list[tuple[str, float, bool]]) -> None:
    samples = []
    for i, (label, value, windowed) in enumerate(rows):
        samples.append(
            Sample(RATIO.name, {"source": str(i), "rep": label}, MONTH if windowed else None, value)
        )
        samples.append(Sample(QUANTILES.name, {"quantile": "0.5", "rep": label}, MONTH, value))
    names = {RATIO.name, QUANTILES.name}
    assert _ours(samples, names) == _by_prometheus_client(samples, names)


def test_every_family_in_chunks_and_without_samples_is_the_same_text() -> None:
    samples = [
        Sample(RATIO.name, {"rep": f"r{i}"}, MONTH, i / 7) for i in range(2 * CHUNK_SAMPLES + 3)
    ]
    names = {spec.name for spec in CATALOGUE}
    assert _ours(samples, names) == _by_prometheus_client(samples, names)


class _Samples(list[Sample]):
    """A list a weak reference can watch."""


def test_the_samples_are_not_held_while_their_text_is_made() -> None:
    # 34,000 samples (a year's scrape) are ~13 MiB: the exposition keeps them grouped by
    # family and lets each family go once its text is made, not the caller's whole list.
    samples = _Samples(Sample(RATIO.name, {"rep": f"r{i}"}, MONTH, 0.5) for i in range(3))
    samples += [Sample(QUANTILES.name, {"quantile": "0.5", "rep": "r"}, MONTH, 1.0)]
    watched = weakref.ref(samples)
    text = kpi_exposition(samples, {RATIO.name, QUANTILES.name})
    del samples
    first = next(part for part in text if part is not None)
    assert RATIO.name.encode() in first or QUANTILES.name.encode() in first
    assert watched() is None, "the caller's list outlived its grouping"
    rest = [part for part in text if part is not None]
    assert rest, "the second family's text came after the list was let go"
