"""/kpis and /metrics query checks: a typo answers 400 naming it and listing the valid
choices."""

from __future__ import annotations

from streamproc.serving.http import bad_query, matches, unknown_metrics


def test_a_good_query_passes() -> None:
    query = {"metric": "sales_forecast_value", "window": "today", "rep": "rep-01"}
    assert bad_query(query) is None
    assert bad_query({}) is None


def test_an_unknown_metric_is_named_with_the_valid_ones() -> None:
    answer = bad_query({"metric": "nope"})
    assert answer is not None
    assert answer["error"] == "unknown metric 'nope'"
    assert "sales_forecast_value" in answer["valid"] and "nope" not in answer["valid"]


def test_an_unknown_window_is_named_with_the_valid_ones() -> None:
    answer = bad_query({"metric": "sales_contact_attempts", "window": "bogus"})
    assert answer is not None
    assert answer["error"] == "unknown window 'bogus'"
    assert {"1h", "today", "7d"} <= set(answer["valid"])


def test_an_unknown_label_is_named() -> None:
    answer = bad_query({"repp": "rep-01"})
    assert answer is not None
    assert answer["error"] == "unknown query parameter 'repp'"
    assert {"rep", "source", "stage", "metric", "window"} <= set(answer["valid"])


def test_metrics_filtered_by_an_unknown_name_is_named_with_the_valid_ones() -> None:
    assert unknown_metrics([]) is None
    assert unknown_metrics(["sales_connect_ratio", "sales_leads_created"]) is None
    answer = unknown_metrics(["sales_connect_ratio", "sales_conect_ratio"])
    assert answer is not None
    assert answer["error"] == "unknown metric 'sales_conect_ratio'"
    assert "sales_connect_ratio" in answer["valid"]


def test_an_empty_label_selects_the_series_without_it_as_in_promql() -> None:
    # periods-and-targets.md: a team's target carries no rep label, {rep=""} in PromQL;
    # /kpis?metric=sales_target&rep= answered nothing, the team's targets included
    team = {"metric": "sales_target", "window": None, "labels": {"measure": "deals_won"}}
    rep = {**team, "labels": {"measure": "deals_won", "rep": "rep-01"}}
    assert matches(team, {"metric": "sales_target", "rep": ""})
    assert not matches(rep, {"metric": "sales_target", "rep": ""})
    assert matches(rep, {"rep": "rep-01"}) and not matches(team, {"rep": "rep-01"})
