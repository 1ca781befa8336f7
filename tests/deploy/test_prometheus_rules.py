"""deploy/prometheus checked by Prometheus's own ``promtool``: the rules load, and every alert's unit tests pass.

``promtool test rules`` runs the cases of the ``*_test.yaml`` files beside the rules: for each
alert a case where it fires and one where it stays quiet. These tests also check that every
alert has both, and that the thresholds the alerts share with the pipeline are the pipeline's.
"""

import re
import subprocess

import pytest
import yaml

from steps.common.config import GateThresholds, PerformanceThresholds
from tests.conftest import REPO
from tests.deploy.promql import RULES, rules
from tests.deploy.tools import require

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_TESTS = sorted(PROMETHEUS_DIR.glob("*_test.yaml"))


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = require("promtool")["promtool"]
    return subprocess.run([path, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_the_rule_files_pass_promtool_check_rules():
    assert RULES, "no *.rules.yaml in deploy/prometheus"
    checked = promtool("check", "rules", *(path.name for path in RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_every_case_of_the_rule_tests_passes_promtool_test_rules(path):
    tested = promtool("test", "rules", path.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


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


def test_the_example_prometheus_configuration_is_valid_and_loads_every_rule_file():
    checked = promtool("check", "config", "prometheus.example.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = yaml.safe_load((PROMETHEUS_DIR / "prometheus.example.yaml").read_text())["rule_files"]
    assert sorted(loaded) == [path.name for path in RULES]
