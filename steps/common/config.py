"""The steps' settings, each declared once with its default; the click options read their defaults from here.

Every value arrives from MLflow unchecked (it checks only ``path`` and ``uri`` parameters),
so each settings class has ``validated()``, which refuses a bad value with
``InvalidParameter`` (exit 2) before a run is created.
"""

import math
from dataclasses import dataclass

from iris_core.refs import DEFAULT_MODEL_NAME
from iris_core.table.iris import IRIS
from steps.common.errors import InvalidParameter

DEFAULT_DATA_PATH = "data/iris.csv"
DEFAULT_LABEL = IRIS.label
DEFAULT_STRICT = False  # a bad Iris CSV falls back to scikit-learn's copy unless --strict
SOLVERS = ("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga")


def _require(ok: bool, name: str, what: str, value) -> None:
    """The one wording of a refused setting: ``alpha must be between 0 and 1, got 2.0`` (exit 2)."""
    if not ok:
        raise InvalidParameter(f"{name} must be {what}, got {value}")


def _non_negative(name: str, value: float) -> None:
    _require(math.isfinite(value) and value >= 0, name, "a non-negative number", value)


def _share(name: str, value: float) -> None:
    _require(0 <= value <= 1, name, "between 0 and 1", value)


@dataclass(frozen=True)
class TableSpec:
    """Which table a step reads, and what decides the contract it is checked against (``steps.tables``).

    A written ``contract`` (a file path) wins; otherwise the curated Iris contract, with the
    fallback to scikit-learn's copy, when the label is Iris's and the model is ``iris`` (the
    defaults); otherwise the contract is inferred from the table.
    """

    data_path: str = DEFAULT_DATA_PATH
    label: str = DEFAULT_LABEL
    model_name: str = DEFAULT_MODEL_NAME
    contract: str = ""  # the path of a contract a person wrote; empty: none
    strict: bool = DEFAULT_STRICT

    def validated(self) -> "TableSpec":
        if not self.data_path or not self.data_path.strip():
            raise InvalidParameter("data_path must name a CSV file")
        if not self.label or not self.label.strip():
            raise InvalidParameter("label must name the label column")
        return TableSpec(self.data_path, self.label, self.model_name, self.contract.strip(), self.strict)

    @property
    def curated_iris(self) -> bool:
        """The worked example: the curated contract, and scikit-learn's copy when the CSV fails a check."""
        return not self.contract and self.label == IRIS.label and self.model_name == DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and split settings of ``train``."""

    max_iter: int = 200
    C: float = 1.0
    solver: str = "lbfgs"
    random_state: int = 42
    test_size: float = 0.2

    def validated(self) -> "TrainConfig":
        _require(self.max_iter >= 1, "max_iter", "a positive integer", self.max_iter)
        _require(math.isfinite(self.C) and self.C > 0, "C", "a positive number", self.C)
        if self.solver not in SOLVERS:
            raise InvalidParameter(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        _require(0 < self.test_size < 1, "test_size", "between 0 and 1", self.test_size)
        return self

    def params(self) -> dict:
        return {"model_type": "LogisticRegression", **self.__dict__}


@dataclass(frozen=True)
class GateThresholds:
    """The promotion gate of ``evaluate``: an absolute floor, how much worse than the champion is tolerated, the
    shadow rule, and the level at which a challenger may pass below the floor when the champion is below it too."""

    min_accuracy: float = 0.9
    max_regression: float = 0.01  # largest allowed drop in accuracy or f1 against the champion
    min_shadow_rows: int = 0  # rows shadowed against the champion on live traffic before a promotion (0: off)
    min_shadow_agreement: float = 0.95  # share of them where the challenger gave the champion's class
    # when the champion is below min_accuracy too: the level of the paired test a challenger below it must pass (0: off)
    below_floor_alpha: float = 0.05

    def validated(self) -> "GateThresholds":
        _non_negative("min_accuracy", self.min_accuracy)
        _share("max_regression", self.max_regression)
        _require(0 <= self.min_shadow_rows < 10**12, "min_shadow_rows", "a non-negative integer", self.min_shadow_rows)
        _share("min_shadow_agreement", self.min_shadow_agreement)
        _require(0 <= self.below_floor_alpha < 1, "below_floor_alpha", "at least 0 and below 1", self.below_floor_alpha)
        return self


@dataclass(frozen=True)
class DriftThresholds:
    """When ``monitor`` calls live traffic drifted (see ``steps.monitoring.drift``)."""

    alpha: float = 0.01
    psi_threshold: float = 0.25
    class_shift: float = 0.2
    min_rows: int = 30

    def validated(self) -> "DriftThresholds":
        _require(0 < self.alpha < 1, "alpha", "between 0 and 1", self.alpha)
        _non_negative("psi_threshold", self.psi_threshold)
        _share("class_shift", self.class_shift)
        _require(self.min_rows >= 2, "min_rows", "at least 2", self.min_rows)
        return self


@dataclass(frozen=True)
class PerformanceThresholds:
    """When ``monitor`` calls live accuracy, measured on labeled rows, a performance drop
    (see ``steps.monitoring.live_performance``)."""

    min_live_accuracy: float = 0.85
    min_labeled_rows: int = 50

    def validated(self) -> "PerformanceThresholds":
        _share("min_live_accuracy", self.min_live_accuracy)
        _require(self.min_labeled_rows >= 1, "min_labeled_rows", "at least 1", self.min_labeled_rows)
        return self


@dataclass(frozen=True)
class CycleSettings:
    """How often ``cycle`` may retrain: not again within ``cooldown_hours`` of the last retrain (0: no cooldown)."""

    cooldown_hours: float = 24.0

    def validated(self) -> "CycleSettings":
        _non_negative("cooldown_hours", self.cooldown_hours)
        return self
