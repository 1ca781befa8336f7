"""The promotion gate as a pure function: an absolute floor, then no regression beyond the tolerance."""

from dataclasses import dataclass, field

from iris_core.contract import GateVerdict


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> GateVerdict:
        return GateVerdict.PASSED if self.passed else GateVerdict.FAILED


def decide(challenger: dict, champion: dict | None, min_accuracy: float, max_regression: float) -> GateDecision:
    """Pass when accuracy reaches ``min_accuracy`` and neither accuracy nor f1 drops more than ``max_regression``."""
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
    return GateDecision(passed, reasons)
