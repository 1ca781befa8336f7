"""Unit tests of the promotion gate and the model URI handling of ``evaluate``."""

import click
import pytest

from iris_core.contract import GateVerdict
from iris_core.errors import EXIT_REVIEW
from iris_core.shadow_evidence import ShadowCounts
from steps.common.config import GateThresholds
from steps.common.errors import GateFailed, InvalidParameter
from steps.evaluate import EvaluationResult, raise_unless_passed
from steps.promotion.gate import GateDecision, PairedCounts, check_shadow, decide, paired_counts

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


# The champion below the floor: a challenger below it too passes only if significantly better on the same rows.

LOW_CHAMPION = {"accuracy": 0.45, "f1_score": 0.40}
RECOVERING = {"accuracy": 0.85, "f1_score": 0.84}
MCNEMAR_6_0 = 2 * 0.5**6  # both tails of 6 discordant rows, all of them the challenger's


def test_paired_counts_count_the_rows_only_one_of_the_two_answered_right():
    truth = ["a", "a", "b", "b", "c"]
    paired = paired_counts(truth, ["a", "b", "b", "a", "c"], ["b", "a", "a", "a", "c"])
    assert (paired.challenger_only, paired.champion_only) == (2, 1)
    with pytest.raises(ValueError):
        paired_counts(truth, truth[:4], truth)


@pytest.mark.parametrize(
    "challenger_only, champion_only, p_value",
    [(6, 0, MCNEMAR_6_0), (0, 6, MCNEMAR_6_0), (0, 0, 1.0), (3, 3, 1.0), (9, 1, 2 * 11 / 1024)],
)
def test_the_paired_test_is_mcnemars_exact_two_sided_test(challenger_only, champion_only, p_value):
    assert PairedCounts(challenger_only, champion_only).p_value == pytest.approx(p_value)


def test_a_challenger_below_the_floor_significantly_better_than_a_champion_below_it_is_promoted_below_the_floor():
    decision = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, paired=PairedCounts(40, 8), below_floor_alpha=0.05)
    assert decision.passed and decision.verdict == GateVerdict.PROMOTED_BELOW_FLOOR
    assert decision.reasons[0] == "accuracy 0.8500 < min_accuracy 0.9"
    assert decision.reasons[1] == (
        "champion accuracy 0.4500 < min_accuracy 0.9 too: only the challenger right on 40 rows, only the champion "
        "on 8, McNemar exact p-value 3.3e-06 <= below_floor_alpha 0.05: significantly better"
    )
    assert decision.reasons[2:] == [
        "accuracy 0.8500 vs champion 0.4500: drop 0.0000 within max_regression 0.01",
        "f1_score 0.8400 vs champion 0.4000: drop 0.0000 within max_regression 0.01",
    ]
    check = decision.below_floor
    assert (check.passed, check.champion_accuracy) == (True, 0.45)
    assert check.p_value == PairedCounts(40, 8).p_value
    assert ";" not in check.reason, "the reasons are stored joined by '; '"


@pytest.mark.parametrize("alpha, promoted", [(MCNEMAR_6_0, True), (MCNEMAR_6_0 * 0.999, False)])
def test_a_p_value_equal_to_below_floor_alpha_is_significant_and_one_above_it_is_not(alpha, promoted):
    decision = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, paired=PairedCounts(6, 0), below_floor_alpha=alpha)
    assert decision.verdict == (GateVerdict.PROMOTED_BELOW_FLOOR if promoted else GateVerdict.FAILED)
    assert decision.reasons[1].endswith("significantly better" if promoted else "not significantly better")


@pytest.mark.parametrize(
    "paired, ending",
    [
        (PairedCounts(7, 2), "McNemar exact p-value 0.18 > below_floor_alpha 0.05: not significantly better"),
        (PairedCounts(4, 4), "McNemar exact p-value 1 > below_floor_alpha 0.05: not better"),
        (PairedCounts(0, 0), "McNemar exact p-value 1 > below_floor_alpha 0.05: not better"),
        (PairedCounts(1, 30), "McNemar exact p-value 3e-08 <= below_floor_alpha 0.05: not better"),
    ],
)
def test_a_challenger_not_significantly_better_than_a_champion_below_the_floor_stays_failed(paired, ending):
    decision = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, paired=paired)
    assert not decision.passed and decision.verdict == GateVerdict.FAILED
    assert decision.reasons[1].endswith(ending)
    assert decision.below_floor is not None and not decision.below_floor.passed


@pytest.mark.parametrize("champion_accuracy", [0.9, 0.95])
def test_a_champion_at_or_above_the_floor_keeps_the_floor_for_a_challenger_below_it_exactly_as_before(
    champion_accuracy,
):
    champion = {"accuracy": champion_accuracy, "f1_score": champion_accuracy}
    before = decide(RECOVERING, champion, 0.9, 0.01)
    now = decide(RECOVERING, champion, 0.9, 0.01, paired=PairedCounts(40, 0), below_floor_alpha=0.05)
    assert now == before and now.verdict == GateVerdict.FAILED and now.below_floor is None


def test_below_floor_alpha_0_turns_the_rule_off():
    before = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01)
    now = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, paired=PairedCounts(40, 0), below_floor_alpha=0)
    assert now == before and now.verdict == GateVerdict.FAILED


def test_without_a_champion_or_a_paired_count_the_floor_alone_decides():
    assert decide(RECOVERING, None, 0.9, 0.01, paired=PairedCounts(40, 0)) == decide(RECOVERING, None, 0.9, 0.01)
    assert decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01).verdict == GateVerdict.FAILED


def test_a_challenger_at_the_floor_passes_as_ever_even_when_the_champion_is_below_it():
    at_floor = {"accuracy": 0.9, "f1_score": 0.9}
    decision = decide(at_floor, LOW_CHAMPION, 0.9, 0.01, paired=PairedCounts(40, 0))
    assert decision == decide(at_floor, LOW_CHAMPION, 0.9, 0.01)
    assert decision.verdict == GateVerdict.PASSED and decision.below_floor is None


def test_the_regression_rule_still_holds_for_a_challenger_promoted_below_the_floor():
    champion = {"accuracy": 0.45, "f1_score": 0.95}  # a champion whose f1 the challenger does not reach
    decision = decide(RECOVERING, champion, 0.9, 0.01, paired=PairedCounts(40, 8))
    assert decision.below_floor.passed and decision.verdict == GateVerdict.FAILED
    assert "f1_score 0.8400 vs champion 0.9500: drop 0.1100 exceeds max_regression 0.01" in decision.reasons


def test_the_shadow_rule_still_holds_for_a_challenger_promoted_below_the_floor():
    paired = PairedCounts(40, 8)
    waiting = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, check_shadow(counts(10, 10), 100, 0.95), paired=paired)
    assert waiting.verdict == GateVerdict.WAITING
    shadowed = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, check_shadow(counts(200, 195), 100, 0.95), paired=paired)
    assert shadowed.verdict == GateVerdict.PROMOTED_BELOW_FLOOR


@pytest.mark.parametrize("alpha", [-0.01, 1, 1.5, float("nan")])
def test_nonsense_below_floor_alphas_are_refused(alpha):
    with pytest.raises(InvalidParameter, match="below_floor_alpha"):
        GateThresholds(below_floor_alpha=alpha).validated()


def test_only_a_pass_and_a_promotion_below_the_floor_let_a_version_hold_the_champion_alias():
    assert {verdict for verdict in GateVerdict if verdict.promotes} == {
        GateVerdict.PASSED,
        GateVerdict.PROMOTED_BELOW_FLOOR,
    }


def evaluation(decision: GateDecision) -> EvaluationResult:
    return EvaluationResult("iris", "2", RECOVERING, "1", decision, promoted=decision.passed)


def test_a_promotion_below_the_floor_exits_4_and_a_pass_exits_0():
    promoted = decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, paired=PairedCounts(40, 8))
    with pytest.raises(click.exceptions.Exit) as exited:
        raise_unless_passed(evaluation(promoted))
    assert exited.value.exit_code == EXIT_REVIEW == 4
    assert raise_unless_passed(evaluation(decide(GOOD, LOW_CHAMPION, 0.9, 0.01))) is None
    with pytest.raises(GateFailed):
        raise_unless_passed(evaluation(decide(RECOVERING, LOW_CHAMPION, 0.9, 0.01, paired=PairedCounts(4, 4))))
