"""The gate's shadow rule through the real ``evaluate`` command line, against a registry made by the pipeline.

Version 3 of the session registry (C=0.3) is the challenger and version 2 the champion.
The shadow evidence is written as serving proxies write it (``iris_core.shadow_evidence``);
``tests/integration/serving/test_delivery.py`` shows real proxies writing it.
"""

import subprocess
import sys

import pytest

from iris_core.contract import GateVerdict, Tag
from iris_core.errors import EXIT_FAILURE, EXIT_OK, EXIT_WAITING
from iris_core.resolver import alias_version
from iris_core.shadow_evidence import ShadowCounts, source_key
from tests.helpers.tracking import REPO, clean_env

pytestmark = pytest.mark.slow


def evaluate(registry, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps.evaluate", "--model-uri", "models:/iris/3", *args],
        cwd=REPO,
        env=clean_env({"MLFLOW_TRACKING_URI": registry.uri}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def shadowed(client, proxy: str, rows: int, agreed: int, against: str = "2") -> None:
    counts = ShadowCounts(against)
    counts.observe_call(5.0, [("setosa", "setosa")] * agreed + [("setosa", "virginica")] * (rows - agreed), rows)
    client.set_model_version_tag("iris", "3", source_key(proxy, against), counts.as_json())


def gate_tags(client) -> tuple[str, str]:
    tags = client.get_model_version("iris", "3").tags
    return tags[Tag.GATE_DECISION], tags[Tag.GATE_REASONS]


def test_the_gate_waits_for_shadow_evidence_then_promotes_when_two_proxies_together_have_enough(registry):
    client = registry.client()
    shadowed(client, "pod-a", 60, 60)
    waiting = evaluate(registry, "--min-shadow-rows", "100")
    assert waiting.returncode == EXIT_WAITING, waiting.stderr
    assert "waiting for shadow evidence: 60 of min_shadow_rows 100 rows against champion version 2" in waiting.stdout
    assert waiting.stderr.strip().splitlines()[-1].startswith("error: gate waiting for shadow evidence")
    assert gate_tags(client)[0] == GateVerdict.WAITING
    assert alias_version(client, "iris", "champion") == "2"

    shadowed(client, "pod-b", 60, 59)
    passed = evaluate(registry, "--min-shadow-rows", "100")
    assert passed.returncode == EXIT_OK, passed.stderr
    decision, reasons = gate_tags(client)
    assert decision == GateVerdict.PASSED and "shadow agreement 0.9917 >= min_shadow_agreement 0.95 over 120" in reasons
    assert alias_version(client, "iris", "champion") == "3"


def test_the_gate_refuses_a_challenger_that_disagrees_with_the_champion_on_live_traffic(registry):
    client = registry.client()
    shadowed(client, "pod-a", 200, 150)
    shadowed(client, "pod-a", 500, 500, against="1")  # against a version that is not the champion: not counted
    refused = evaluate(registry, "--min-shadow-rows", "100", "--min-shadow-agreement", "0.9")
    assert refused.returncode == EXIT_FAILURE, refused.stderr
    decision, reasons = gate_tags(client)
    assert decision == GateVerdict.FAILED and "shadow agreement 0.7500 < min_shadow_agreement 0.9 over 200" in reasons
    assert alias_version(client, "iris", "champion") == "2"
