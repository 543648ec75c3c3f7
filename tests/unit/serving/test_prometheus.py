"""The KPI exposition: the text prometheus_client itself would write, byte for byte."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
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


def _families(text: bytes) -> dict[bytes, bytes]:
    """Each family's text by its name (the exposition writes those with samples first)."""
    blocks = [b"# HELP " + block for block in text.split(b"# HELP ")[1:]]
    return {block.split(b" ", 3)[2]: block for block in blocks}


def _in_catalogue_order(samples: list[Sample]) -> list[Sample]:
    """The samples as the readers yield them: a metric's together (a stable sort)."""
    order = {spec.name: i for i, spec in enumerate(CATALOGUE)}
    return sorted(samples, key=lambda sample: order[sample.metric])


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
    samples = _in_catalogue_order(samples)
    assert _ours(samples, names) == _by_prometheus_client(samples, names)


def test_every_family_in_chunks_and_without_samples_is_the_same_text() -> None:
    samples = [
        Sample(RATIO.name, {"rep": f"r{i}"}, MONTH, i / 7) for i in range(2 * CHUNK_SAMPLES + 3)
    ]
    names = {spec.name for spec in CATALOGUE}
    ours = _families(_ours(samples, names))
    assert next(iter(ours)) == RATIO.name.encode(), "the families with samples come first"
    assert ours == _families(_by_prometheus_client(samples, names))
    assert len(ours) == len(CATALOGUE)


def test_samples_of_a_metric_apart_or_of_no_kpi_asked_for_are_refused() -> None:
    # Two families of one name: Prometheus would refuse the whole scrape.
    apart = [
        Sample(RATIO.name, {"rep": "a"}, MONTH, 0.5),
        Sample(QUANTILES.name, {"quantile": "0.5", "rep": "a"}, MONTH, 1.0),
        Sample(RATIO.name, {"rep": "b"}, MONTH, 0.25),
    ]
    with pytest.raises(ValueError, match="do not come together"):
        _ours(apart, {RATIO.name, QUANTILES.name})
    with pytest.raises(ValueError, match="not a KPI asked for"):
        _ours(apart[:1], {QUANTILES.name})


def test_each_sample_is_formatted_as_it_comes_not_gathered_first() -> None:
    # A list of every sample was a scrape's peak (34,000 samples, a year's scrape: 22.0
    # MiB traced); the readers yield them lazily, and a chunk of text is out before the
    # samples after it are read.
    pulled = 0

    def samples() -> Iterator[Sample]:
        nonlocal pulled
        for i in range(3 * CHUNK_SAMPLES):
            pulled += 1
            yield Sample(RATIO.name, {"rep": f"r{i}"}, MONTH, 0.5)

    text = kpi_exposition(samples(), {RATIO.name})
    first = next(part for part in text if part is not None)
    assert first.startswith(f"# HELP {RATIO.name} ".encode())
    assert first.count(b"\n") == 2 + CHUNK_SAMPLES
    assert pulled <= CHUNK_SAMPLES + 1, f"{pulled} samples read before the first chunk"
