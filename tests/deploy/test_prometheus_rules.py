"""Prometheus config, alert rules and their promtool unit tests, and Alertmanager config."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
RULES = ROOT / "prometheus" / "rules" / "streamproc-alerts.yml"
RULE_TESTS = ROOT / "prometheus" / "rules" / "streamproc-alerts.test.yml"
ALERTMANAGER_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
DEBIAN_PACKAGE = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def tool(name: str) -> str:
    """The binary's path; a missing one fails in CI (the test command installs it) or skips."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found:
        return found
    message = f"{name} not found: apt-get install {DEBIAN_PACKAGE[name]}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root; the output goes in the assertion message."""
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_config() -> None:
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_for_severity_and_templated_summary() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert "{{" in rule["annotations"]["summary"], rule["alert"]


def test_lead_alerts_name_the_rep_and_cover_the_catalogue_gauges() -> None:
    sales = [rule for rule in alert_rules() if rule["labels"].get("component") == "sales"]
    exprs = " ".join(rule["expr"] for rule in sales)
    assert "sales_leads_awaiting_contact_over_sla" in exprs
    assert "sales_oldest_awaiting_contact_seconds" in exprs
    for rule in sales:
        assert "by (rep)" in rule["expr"], rule["alert"]
        assert "{{ $labels.rep }}" in rule["annotations"]["summary"], rule["alert"]
    assert {rule["labels"]["severity"] for rule in sales} == {"warning", "critical"}


def test_rule_tests_cover_every_alert_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"never seen firing: {sorted(names - fired)}"
    assert names <= quiet, f"never seen quiet: {sorted(names - quiet)}"


def test_prometheus_loads_the_rules_and_scrapes_every_worker() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    rule_files = [(PROMETHEUS_CONFIG.parent / path).resolve() for path in config["rule_files"]]
    assert RULES.resolve() in rule_files
    assert RULE_TESTS.resolve() not in rule_files
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "streamproc"]
    assert job["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 6066, "refresh_interval": "15s"}
    ]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]


def test_alertmanager_has_a_webhook_receiver() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert receivers[config["route"]["receiver"]]["webhook_configs"][0]["url"].startswith("http")
