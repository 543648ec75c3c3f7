"""The generated reference pages are committed as the code makes them."""

from __future__ import annotations

from pathlib import Path

from streamproc.kpis.catalogue import CATALOGUE
from streamproc.serving.prometheus import PROCESSOR_METRICS
from streamproc.tools.reference import PAGES, write_reference

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_committed_pages_are_what_the_code_generates(tmp_path: Path) -> None:
    written = write_reference(tmp_path)
    assert [path.name for path in written] == list(PAGES)
    for path in written:
        committed = DOCS / path.name
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"docs/{path.name} is stale: run `python -m streamproc.tools.reference docs`"
        )


def test_every_metric_has_a_row() -> None:
    page = PAGES["metrics.md"]()
    names = [kpi.name for kpi in CATALOGUE] + [m.name for m in PROCESSOR_METRICS]
    assert len(names) > 30
    for name in names:
        assert f"| `{name}` |" in page, name
