"""The promotion gate as pure functions: an absolute floor, no regression beyond the tolerance, and, when
asked for, enough shadow evidence that the challenger answers live traffic as the champion does.

The floor protects a healthy service from a worse model. When the world changes under the
champion, it falls below the floor on the gate's own rows, and the floor would then protect
a broken service from a better model: the retrained version, below the floor too, would
wait as challenger while the champion keeps answering wrong. So when the champion is below
the floor, a challenger below it passes the floor if it is significantly better on the same
rows by McNemar's exact test (the rows where one of the two is right and the other wrong),
at the level ``below_floor_alpha``; its verdict is ``promoted_below_floor``, and a person
should look. The other rules hold as ever.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from iris_core.contract import GateVerdict
from iris_core.shadow_evidence import ShadowCounts
from steps.common.config import GateThresholds


@dataclass(frozen=True)
class PairedCounts:
    """Challenger and champion on the same rows: the rows only one of them answered right."""

    challenger_only: int
    champion_only: int

    @property
    def p_value(self) -> float:
        """McNemar's exact test, two-sided: under "as good as each other", each such row goes either way at 1/2."""
        rows = self.challenger_only + self.champion_only
        if rows == 0:
            return 1.0
        from scipy.stats import binomtest

        return float(binomtest(self.challenger_only, rows, 0.5).pvalue)


def paired_counts(truth: Sequence[str], challenger: Sequence[str], champion: Sequence[str]) -> PairedCounts:
    """Count, over the same rows in the same order, where only the challenger or only the champion was right."""
    if not len(truth) == len(challenger) == len(champion):
        raise ValueError("the challenger and the champion must answer the same rows")
    right = [(ours == true, theirs == true) for true, ours, theirs in zip(truth, challenger, champion)]
    return PairedCounts(
        challenger_only=sum(ours and not theirs for ours, theirs in right),
        champion_only=sum(theirs and not ours for ours, theirs in right),
    )


@dataclass(frozen=True)
class BelowFloorCheck:
    """The below-floor rule's answer, for a challenger below the floor measured against a champion below it too."""

    passed: bool
    champion_accuracy: float
    p_value: float
    reason: str


def check_below_floor(
    champion_accuracy: float, paired: PairedCounts, min_accuracy: float, alpha: float
) -> BelowFloorCheck | None:
    """Pass when the challenger is right more often than the champion where they differ, at p <= ``alpha``;
    None when the rule does not apply: the champion meets the floor, or ``alpha`` is 0 (the rule is off)."""
    if champion_accuracy >= min_accuracy or alpha <= 0:
        return None
    p_value = paired.p_value
    better = paired.challenger_only > paired.champion_only
    passed = better and p_value <= alpha
    if passed:
        verdict = "significantly better"
    else:
        verdict = "not significantly better" if better else "not better"
    reason = (
        f"champion accuracy {champion_accuracy:.4f} < min_accuracy {min_accuracy} too: "
        f"only the challenger right on {paired.challenger_only} rows, only the champion on {paired.champion_only}, "
        f"McNemar exact p-value {p_value:.2g} {'<=' if p_value <= alpha else '>'} below_floor_alpha {alpha}: {verdict}"
    )
    return BelowFloorCheck(passed, champion_accuracy, p_value, reason)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    waiting: bool = False  # nothing failed, but the shadow evidence asked for is not there yet
    below_floor: BelowFloorCheck | None = None  # the paired test, when the challenger and the champion fail the floor

    @property
    def verdict(self) -> GateVerdict:
        if self.passed:
            below = self.below_floor is not None and self.below_floor.passed
            return GateVerdict.PROMOTED_BELOW_FLOOR if below else GateVerdict.PASSED
        return GateVerdict.WAITING if self.waiting else GateVerdict.FAILED


@dataclass(frozen=True)
class ShadowCheck:
    """The shadow rule's answer: True passes, False fails, None waits for more rows."""

    passed: bool | None
    reason: str


def check_shadow(evidence: ShadowCounts, min_rows: int, min_agreement: float) -> ShadowCheck:
    """Enough rows shadowed against the champion, and agreement with its classes of at least ``min_agreement``."""
    against = f"champion version {evidence.against}"
    if evidence.rows < min_rows:
        return ShadowCheck(
            None, f"waiting for shadow evidence: {evidence.rows} of min_shadow_rows {min_rows} rows against {against}"
        )
    agreement = evidence.agreement or 0.0
    passed = agreement >= min_agreement
    return ShadowCheck(
        passed,
        f"shadow agreement {agreement:.4f} {'>=' if passed else '<'} min_shadow_agreement {min_agreement} "
        f"over {evidence.rows} rows against {against}",
    )


def decide(
    challenger: dict,
    champion: dict | None,
    min_accuracy: float,
    max_regression: float,
    shadow: ShadowCheck | None = None,
    uncompared: str | None = None,
    paired: PairedCounts | None = None,
    below_floor_alpha: float = GateThresholds.below_floor_alpha,
) -> GateDecision:
    """Pass when accuracy reaches ``min_accuracy``, neither accuracy nor f1 drops more than ``max_regression``,
    and the shadow rule (when given) passes; wait, rather than fail, when only the shadow rows are missing.

    ``uncompared`` says why there is a champion but no comparison with it (it reads other
    features); it joins the reasons, and the floor alone decides.

    ``paired`` counts, on the same rows as the metrics, where only one of the two was right.
    With it, a challenger below ``min_accuracy`` passes the floor when the champion is below
    it too and the challenger is significantly better (``check_below_floor``); the verdict
    then says so. Without it, or with the champion at or above the floor, the floor holds.
    """
    reasons, passed = [], True
    accuracy = challenger["accuracy"]
    below_floor = None
    if accuracy >= min_accuracy:
        reasons.append(f"accuracy {accuracy:.4f} >= min_accuracy {min_accuracy}")
    else:
        reasons.append(f"accuracy {accuracy:.4f} < min_accuracy {min_accuracy}")
        if champion and paired is not None:
            below_floor = check_below_floor(champion["accuracy"], paired, min_accuracy, below_floor_alpha)
        if below_floor is not None:
            reasons.append(below_floor.reason)
        passed = below_floor is not None and below_floor.passed
    for metric in ("accuracy", "f1_score") if champion else ():
        drop = champion[metric] - challenger[metric]
        verdict = "within" if drop <= max_regression + 1e-12 else "exceeds"
        passed = passed and verdict == "within"
        reasons.append(
            f"{metric} {challenger[metric]:.4f} vs champion {champion[metric]:.4f}: "
            f"drop {max(drop, 0):.4f} {verdict} max_regression {max_regression}"
        )
    if uncompared:
        reasons.append(uncompared)
    if shadow is None:
        return GateDecision(passed, reasons, below_floor=below_floor)
    reasons.append(shadow.reason)
    waiting = passed and shadow.passed is None
    return GateDecision(passed and shadow.passed is True, reasons, waiting=waiting, below_floor=below_floor)
