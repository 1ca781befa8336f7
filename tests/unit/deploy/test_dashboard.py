"""deploy/grafana's dashboard read as Grafana would: a panel for every alert's signal, queries that keep the model label.

That every metric and label it queries exists on a real proxy is checked by scraping one
(``test_metrics_exist.py``); these tests read the JSON only.
"""

import json
import re

import pytest

from tests.helpers.deploy.promql import DASHBOARDS, all_expressions, dashboard_queries, panels, rules, selectors

(DASHBOARD,) = DASHBOARDS


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def raw_names(expr: str) -> set[str]:
    """The scraped metric names an expression reads, through the recording rules it uses."""
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    names = set()
    for selector in selectors(expr):
        names |= raw_names(recorded[selector.name]) if selector.name in recorded else {selector.name}
    return names


def test_the_dashboard_picks_its_prometheus_and_its_jobs_from_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["includeAll"] and variables["job"]["allValue"] == ".*"
    assert dashboard()["uid"] and dashboard()["title"]


def test_every_panel_has_its_own_id_a_place_and_queries_the_chosen_prometheus():
    all_panels = panels(dashboard())
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and 'job=~"$job"' in target["expr"], panel["title"]


@pytest.mark.parametrize("alert", [rule for rule in rules() if "alert" in rule], ids=lambda rule: rule["alert"])
def test_every_alert_has_a_panel_showing_what_it_watches(alert):
    shown = [set().union(*(raw_names(t["expr"]) for t in p.get("targets", []))) for p in panels(dashboard())]
    watched = raw_names(alert["expr"])
    assert any(watched <= names for names in shown), f"no panel shows all of {sorted(watched)}"


def test_throughput_is_shown_per_model_and_version():
    per_version = [
        expr
        for expr in dashboard_queries().values()
        if "proxy_requests_total" in raw_names(expr) and re.search(r"sum by \(model, version\)", expr)
    ]
    assert per_version


def test_every_aggregation_and_join_keeps_the_model_label():
    for where, expr in all_expressions().items():
        for keyword, labels in re.findall(r"\b(by|on) \(([^)]*)\)", expr):
            assert "model" in {label.strip() for label in labels.split(",")}, f"{where}: {keyword} ({labels})"
