"""Generate grafana/dashboards/*.json from grafana/dashboards_src and list every panel query."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"
if str(HERE) not in sys.path:  # dashboards_src sits beside this script; appended, not shadowing
    sys.path.append(str(HERE))

from dashboards_src import manager, operations, wallboard  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

__all__ = [
    "BUILTIN_VARIABLES",
    "DASHBOARDS",
    "DASHBOARDS_DIR",
    "PanelQuery",
    "all_panel_queries",
    "main",
    "panel_queries",
    "render",
    "write_all",
]

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    f"{wallboard.UID}.json": wallboard.build,
    f"{manager.UID}.json": manager.build,
    f"{operations.UID}.json": operations.build,
}
"""File name in grafana/dashboards -> the function that builds it."""

BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h"}
"""Values for Grafana's built-in variables when a query runs outside Grafana."""

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, its template variables replaced by their defaults."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str


def render(model: Dashboard) -> str:
    """The dashboard as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write_all(out_dir: Path = DASHBOARDS_DIR) -> list[Path]:
    """Build every dashboard into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = out_dir / name
        path.write_text(render(build()), encoding="utf-8")
        written.append(path)
    return written


def _variable_defaults(board: dict[str, Any]) -> dict[str, str]:
    """Each template variable's value when nothing is picked: All (``allValue``) or current."""
    values = dict(BUILTIN_VARIABLES)
    for var in board.get("templating", {}).get("list", []):
        current = var.get("current", {}).get("value")
        if var.get("includeAll") and current in (None, "$__all", ["$__all"]):
            values[var["name"]] = var.get("allValue", ".*")
        elif isinstance(current, str):
            values[var["name"]] = current
    return values


def _substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


def panel_queries(board: dict[str, Any]) -> Iterator[PanelQuery]:
    """Every panel target of a dashboard JSON, with its variables substituted."""
    values = _variable_defaults(board)
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            yield PanelQuery(
                dashboard=board["uid"],
                panel=panel["title"],
                ref_id=target["refId"],
                expr=_substitute(target["expr"], values),
            )


def all_panel_queries(directory: Path = DASHBOARDS_DIR) -> list[PanelQuery]:
    """Every panel query of the committed dashboards, ready to run against Prometheus.

    Load this file by path (``importlib.util.spec_from_file_location``): grafana/ is a
    deploy folder, not a package.
    """
    queries: list[PanelQuery] = []
    for path in sorted(directory.glob("*.json")):
        queries.extend(panel_queries(json.loads(path.read_text(encoding="utf-8"))))
    return queries


def main(argv: list[str] | None = None) -> int:
    """``python grafana/build.py [--out DIR]``: regenerate the dashboard JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, help="output folder")
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
