"""The promotion gate as pure functions: an absolute floor, no regression beyond the tolerance, and, when
asked for, enough shadow evidence that the challenger answers live traffic as the champion does."""

from dataclasses import dataclass, field

from iris_core.contract import GateVerdict
from iris_core.shadow_evidence import ShadowCounts


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    waiting: bool = False  # nothing failed, but the shadow evidence asked for is not there yet

    @property
    def verdict(self) -> GateVerdict:
        if self.passed:
            return GateVerdict.PASSED
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
) -> GateDecision:
    """Pass when accuracy reaches ``min_accuracy``, neither accuracy nor f1 drops more than ``max_regression``,
    and the shadow rule (when given) passes; wait, rather than fail, when only the shadow rows are missing.

    ``uncompared`` says why there is a champion but no comparison with it (it reads other
    features); it joins the reasons, and the floor alone decides.
    """
    reasons, passed = [], True
    accuracy = challenger["accuracy"]
    if accuracy >= min_accuracy:
        reasons.append(f"accuracy {accuracy:.4f} >= min_accuracy {min_accuracy}")
    else:
        passed = False
        reasons.append(f"accuracy {accuracy:.4f} < min_accuracy {min_accuracy}")
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
        return GateDecision(passed, reasons)
    reasons.append(shadow.reason)
    waiting = passed and shadow.passed is None
    return GateDecision(passed and shadow.passed is True, reasons, waiting=waiting)
