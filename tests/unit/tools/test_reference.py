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


def test_every_setting_named_anywhere_is_a_documented_setting() -> None:
    """A STREAMPROC_* in the code, README or docs that is no setting (a typo in an error
    message, a renamed setting) fails here, and so does a setting missing from the page."""
    import re

    from streamproc.config import Settings

    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    known = {f"STREAMPROC_{name.upper()}" for name in Settings.model_fields}
    for variable in known:
        assert f"| `{variable}` |" in page, f"{variable} missing from docs/configuration.md"
    root = DOCS.parent
    texts = [*root.glob("streamproc/**/*.py"), root / "README.md", *DOCS.glob("*.md")]
    named = {
        (match, path.relative_to(root).as_posix())
        for path in texts
        for match in re.findall(r"STREAMPROC_[A-Z_]*[A-Z]", path.read_text(encoding="utf-8"))
    }
    unknown = sorted((name, where) for name, where in named if name not in known)
    assert not unknown, unknown
