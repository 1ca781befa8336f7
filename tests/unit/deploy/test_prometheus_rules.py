"""deploy/prometheus's alerts: each has a rule test where it fires and one where it stays quiet, and the thresholds
the alerts share with the pipeline are the pipeline's.

Prometheus's own ``promtool`` runs those rule tests in ``tests/integration/deploy/test_prometheus_rules.py``.
"""

import re

import yaml

from steps.common.config import GateThresholds, PerformanceThresholds
from tests.helpers.deploy.promql import RULE_TESTS, rules


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet():
    fires, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alerts()) - fires == set(), "alerts never seen firing"
    assert set(alerts()) - quiet == set(), "alerts never seen quiet"


def test_every_operator_signal_the_deployment_promises_has_an_alert():
    assert {
        "IrisServingHigh5xxRate",
        "IrisServingHighErrorRate",
        "IrisServingSlowP99",
        "IrisLiveAccuracyBelowFloor",
        "IrisModelDriftDetected",
        "IrisCanaryRolledBack",
        "IrisModelServerRestarting",
        "IrisShadowDisagreement",
        "IrisPredictionLogDropping",
        "IrisTrackingServerUnreachable",
    } <= set(alerts())
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_the_live_accuracy_floor_is_the_monitors_and_the_shadow_floor_is_the_gates():
    floor = PerformanceThresholds()
    accuracy = alerts()["IrisLiveAccuracyBelowFloor"]["expr"]
    assert re.search(rf"< {floor.min_live_accuracy}\b", accuracy), accuracy
    assert re.search(rf">= {floor.min_labeled_rows}\b", accuracy), accuracy
    shadow = alerts()["IrisShadowDisagreement"]["expr"]
    assert re.search(rf"< {GateThresholds.min_shadow_agreement}\b", shadow), shadow
