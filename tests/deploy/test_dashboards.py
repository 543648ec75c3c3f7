"""Grafana dashboards: generated JSON committed as built, well formed, valid PromQL."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from streamproc.kpis.catalogue import CATALOGUE
from streamproc.serving.prometheus import PROCESSOR_METRICS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
WALLBOARD = "sales-floor-wallboard"
METRICS = (
    {kpi.name for kpi in CATALOGUE}
    | {m.name for m in PROCESSOR_METRICS}
    | {f"{m.name}_bucket" for m in PROCESSOR_METRICS if m.type == "histogram"}
)
"""Every metric a worker exports: the KPI catalogue and the processor's own."""


def tool(name: str) -> str:
    """The binary's path; a missing one fails in CI (the test command installs it) or skips."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found:
        return found
    message = f"{name} not found: apt-get install prometheus"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def build() -> ModuleType:
    """grafana/build.py, loaded by path: grafana/ is a deploy folder, not a package."""
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def datasource_refs(node: Any) -> list[dict[str, Any]]:
    """Every ``datasource`` object anywhere in a dashboard."""
    if isinstance(node, list):
        return [ref for item in node for ref in datasource_refs(item)]
    if not isinstance(node, dict):
        return []
    found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
    return found + [ref for value in node.values() for ref in datasource_refs(value)]


def test_the_dashboards_exist() -> None:
    names = {path.stem for path in DASHBOARDS}
    assert names == {WALLBOARD, "sales-manager", "streamproc-operations"}


def test_committed_json_is_what_the_builder_generates(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GRAFANA / "build.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    generated = sorted(tmp_path.glob("*.json"))
    assert [path.name for path in generated] == [path.name for path in DASHBOARDS]
    for path in generated:
        committed = GRAFANA / "dashboards" / path.name
        assert path.read_text() == committed.read_text(), (
            f"{committed.name} is stale: run python grafana/build.py"
        )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_essentials(path: Path) -> None:
    board = load(path)
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,40}", board["uid"])
    assert board["uid"] == path.stem
    assert board["title"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 39
    assert board["refresh"] and board["time"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    assert panels(board), "a board without panels"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
    for panel in panels(board):
        assert panel["title"] and panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_datasources_are_provisioned(path: Path) -> None:
    provisioned = {}
    for file in (GRAFANA / "provisioning" / "datasources").glob("*.yaml"):
        for source in yaml.safe_load(file.read_text(encoding="utf-8"))["datasources"]:
            provisioned[source["uid"]] = source["type"]
    assert provisioned, "no datasource provisioned"
    refs = datasource_refs(load(path))
    assert refs
    for ref in refs:
        assert provisioned.get(ref["uid"]) == ref["type"], ref


def test_dashboards_provider_loads_files() -> None:
    file = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
    (provider,) = yaml.safe_load(file.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_wallboard_is_an_unattended_screen() -> None:
    board = load(GRAFANA / "dashboards" / f"{WALLBOARD}.json")
    assert not board.get("templating", {}).get("list")
    assert board["refresh"] == "10s"
    assert panels(board)
    for panel in panels(board):
        assert panel["type"] in {"stat", "bargauge"}, panel["title"]
        assert all(target["instant"] for target in panel["targets"]), panel["title"]
        assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"], panel["title"]
        if panel["type"] == "stat":
            assert panel["options"]["colorMode"] == "background", panel["title"]
            assert panel["options"]["graphMode"] == "none", panel["title"]
    exprs = " ".join(t["expr"] for p in panels(board) for t in p["targets"])
    for metric in (
        "sales_leads_awaiting_contact",
        "sales_oldest_awaiting_contact_seconds",
        "sales_response_time_avg_seconds",
        "sales_responded_within_sla_ratio",
        "sales_contact_attempts",
        "sales_contact_connects",
        "sales_activity_target_ratio",
        "sales_deals_won",
        "sales_revenue_won",
        "sales_forecast_value",
        "sales_emails_opened",
        "sales_emails_sent",
    ):
        assert metric in exprs, metric


def test_manager_filters_by_rep_source_and_window() -> None:
    board = load(GRAFANA / "dashboards" / "sales-manager.json")
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert set(variables) == {"rep", "source", "window", "period"}
    period = variables.pop("period")  # the calendar period of the this-vs-last and quotas
    assert period["type"] == "custom" and period["query"] == "month,quarter,year"
    assert period["current"]["value"] == "month"
    for name, var in variables.items():
        assert var["type"] == "query"
        assert var["query"].startswith("label_values(") and var["query"].endswith(f", {name})")
    assert variables["window"]["current"]["value"] == "today"


def test_every_panel_query_is_listed_with_variables_substituted(build: ModuleType) -> None:
    queries = build.all_panel_queries()
    targets = sum(len(p["targets"]) for path in DASHBOARDS for p in panels(load(path)))
    assert len(queries) == targets
    keys = [(q.dashboard, q.panel, q.ref_id) for q in queries]
    assert len(keys) == len(set(keys))
    for query in queries:
        assert "$" not in query.expr, query
    assert any('rep=~".*"' in query.expr for query in queries)
    assert any("[1m]" in query.expr for query in queries)


def test_queries_use_catalogue_metrics_aggregated(build: ModuleType) -> None:
    queries = build.all_panel_queries()
    assert queries
    for query in queries:
        for metric in re.findall(r"\b(?:sales|streamproc)_\w+", query.expr):
            assert metric in METRICS, (query, metric)
        # Several workers each export a part: every query aggregates across them.
        aggregated = r"(sort_desc\(|histogram_quantile\([\d.]+, )?(sum|max|count)\b"
        assert re.match(aggregated, query.expr), query


def test_every_panel_expr_passes_promtool(build: ModuleType, tmp_path: Path) -> None:
    queries = build.all_panel_queries()
    rules = [
        {"record": f"dashboard:query_{n}:check", "expr": q.expr} for n, q in enumerate(queries)
    ]
    rules_file = tmp_path / "panel-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def series(metric: str, value: float, worker: int, **labels: str) -> dict[str, str]:
    """One input series of a promtool test, as exported by worker ``worker``."""
    names = ", ".join(f'{key}="{val}"' for key, val in sorted(labels.items()))
    return {"series": f'{metric}{{{names}, instance="w{worker}:6066"}}', "values": f"{value}x5"}


HONEST_INPUT = [
    # Counts split over two workers; means and ratios exported whole by one worker.
    series("sales_leads_awaiting_contact", 2, 1, rep="alice", source="web"),
    series("sales_leads_awaiting_contact", 1, 2, rep="alice", source="referral"),
    series("sales_first_contacts", 3, 1, window="today", rep="alice"),
    series("sales_first_contacts", 1, 2, window="today", rep="alice"),
    series("sales_first_contacts", 1, 2, window="today", rep="bob"),
    series("sales_response_time_avg_seconds", 100, 1, window="today", rep="alice"),
    series("sales_response_time_avg_seconds", 600, 2, window="today", rep="bob"),
    series("sales_contact_attempts", 10, 1, window="today", rep="alice", channel="phone"),
    series("sales_contact_attempts", 30, 2, window="today", rep="bob", channel="phone"),
    series("sales_contact_connects", 5, 1, window="today", rep="alice", channel="phone"),
    series("sales_contact_connects", 3, 2, window="today", rep="bob", channel="phone"),
    series("sales_emails_sent", 10, 1, window="today", rep="alice"),
    series("sales_emails_sent", 10, 2, window="today", rep="bob"),
    series("sales_emails_opened", 5, 1, window="today", rep="alice"),
]
HONEST_EXPECTED = {
    "Leads waiting for contact": ("{}", 3),
    "Avg response today": ("{}", 200),  # (4 x 100 + 1 x 600) / 5, not (100 + 600) / 2
    "Connect rate by channel today": ('{channel="phone"}', 0.2),  # 8 / 40, not 0.3
    "Email open rate today": ("{}", 0.25),
    "Deals won today": ("{}", 0),  # no deal yet: 0, not "No data"
}


def test_wallboard_aggregates_workers_honestly(build: ModuleType, tmp_path: Path) -> None:
    exprs = {q.panel: q.expr for q in build.all_panel_queries() if q.dashboard == WALLBOARD}
    cases = [
        {"expr": exprs[title], "eval_time": "2m", "exp_samples": [{"labels": lbl, "value": v}]}
        for title, (lbl, v) in HONEST_EXPECTED.items()
    ]
    test = {"tests": [{"interval": "1m", "input_series": HONEST_INPUT, "promql_expr_test": cases}]}
    test_file = tmp_path / "wallboard.test.yml"
    test_file.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
