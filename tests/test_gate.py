"""Unit tests of the promotion gate and the model URI handling of ``evaluate``."""

import pytest

from iris_core.contract import GateVerdict
from iris_core.shadow_evidence import ShadowCounts
from steps.config import GateThresholds
from steps.errors import InvalidParameter
from steps.gate import check_shadow, decide

GOOD = {"accuracy": 0.96, "f1_score": 0.96}


def test_first_model_above_the_floor_passes():
    decision = decide(GOOD, None, min_accuracy=0.9, max_regression=0.01)
    assert decision.passed
    assert decision.reasons == ["accuracy 0.9600 >= min_accuracy 0.9"]


def test_model_below_the_floor_fails_and_says_why():
    decision = decide({"accuracy": 0.85, "f1_score": 0.85}, None, 0.9, 0.01)
    assert not decision.passed
    assert "accuracy 0.8500 < min_accuracy 0.9" in decision.reasons


def test_regression_within_tolerance_passes():
    assert decide({"accuracy": 0.955, "f1_score": 0.955}, GOOD, 0.9, 0.01).passed


@pytest.mark.parametrize("metric", ["accuracy", "f1_score"])
def test_regression_beyond_tolerance_in_either_metric_fails(metric):
    challenger = {**GOOD, metric: 0.93}
    decision = decide(challenger, GOOD, 0.9, 0.01)
    assert not decision.passed
    assert any(reason.startswith(metric) and "exceeds" in reason for reason in decision.reasons)


def test_improvement_over_the_champion_passes():
    assert decide({"accuracy": 1.0, "f1_score": 1.0}, GOOD, 0.9, 0.0).passed


def test_min_accuracy_above_one_forces_a_failure():
    assert not decide({"accuracy": 1.0, "f1_score": 1.0}, None, 1.01, 0.01).passed


@pytest.mark.parametrize("min_accuracy, max_regression", [(-0.1, 0.01), (0.9, -1), (0.9, 2), (float("nan"), 0.01)])
def test_nonsense_thresholds_are_refused(min_accuracy, max_regression):
    with pytest.raises(InvalidParameter):
        GateThresholds(min_accuracy, max_regression).validated()


def counts(rows: int, agreed: int, against: str = "2") -> ShadowCounts:
    return ShadowCounts(against, rows=rows, agreed=agreed)


def test_the_shadow_rule_waits_until_enough_rows_were_shadowed_against_the_champion():
    check = check_shadow(counts(40, 40), min_rows=100, min_agreement=0.95)
    assert check.passed is None and check.reason.startswith("waiting for shadow evidence: 40 of min_shadow_rows 100")
    decision = decide(GOOD, GOOD, 0.9, 0.01, check)
    assert not decision.passed and decision.waiting and decision.verdict == GateVerdict.WAITING


def test_the_shadow_rule_passes_with_enough_agreeing_rows_and_fails_below_the_agreement():
    assert decide(GOOD, GOOD, 0.9, 0.01, check_shadow(counts(200, 195), 100, 0.95)).verdict == GateVerdict.PASSED
    failed = decide(GOOD, GOOD, 0.9, 0.01, check_shadow(counts(200, 150), 100, 0.95))
    assert failed.verdict == GateVerdict.FAILED and not failed.waiting
    assert "shadow agreement 0.7500 < min_shadow_agreement 0.95 over 200 rows" in failed.reasons[-1]


def test_a_challenger_that_fails_on_accuracy_fails_even_while_shadow_evidence_is_missing():
    decision = decide({"accuracy": 0.5, "f1_score": 0.5}, GOOD, 0.9, 0.01, check_shadow(counts(0, 0), 100, 0.95))
    assert decision.verdict == GateVerdict.FAILED


@pytest.mark.parametrize("rows, agreement", [(-1, 0.9), (10, 1.5), (10, -0.1)])
def test_nonsense_shadow_thresholds_are_refused(rows, agreement):
    with pytest.raises(InvalidParameter):
        GateThresholds(0.9, 0.01, rows, agreement).validated()
