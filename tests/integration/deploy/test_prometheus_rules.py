"""deploy/prometheus checked by Prometheus's own ``promtool``: the rules load, and every alert's unit tests pass.

``promtool test rules`` runs the cases of the ``*_test.yaml`` files beside the rules: for each
alert a case where it fires and one where it stays quiet (``tests/unit/deploy/test_prometheus_rules.py``
checks that every alert has both, and that the thresholds the alerts share with the pipeline are the pipeline's).
"""

import subprocess

import pytest
import yaml

from tests.helpers.deploy.promql import PROMETHEUS_DIR, RULE_TESTS, RULES, rules
from tests.helpers.deploy.tools import require


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = require("promtool")["promtool"]
    return subprocess.run([path, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)


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


def test_the_example_prometheus_configuration_is_valid_and_loads_every_rule_file():
    checked = promtool("check", "config", "prometheus.example.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = yaml.safe_load((PROMETHEUS_DIR / "prometheus.example.yaml").read_text())["rule_files"]
    assert sorted(loaded) == [path.name for path in RULES]
