"""Splitting the data, fitting the classifier, and what training adds to the contract: scikit-learn only, no MLflow.

Logistic regression's penalty treats every coefficient alike, so features on very
different scales (wine: proline in the hundreds, hue near 1) need standardising first.
The scaler then goes inside the fitted estimator (a Pipeline), so that whatever serves the
model sends raw values. Iris's features are on comparable scales and keep the plain
estimator they always had.
"""

import numpy as np
import pandas as pd

from iris_core.table.contract import Readiness, TableContract
from steps.common.config import DEFAULT_LABEL, TrainConfig
from steps.common.errors import DataValidationError
from steps.tables.checks import check_split

# Scale when the features' standard deviations differ by more than this factor.
SCALE_RATIO = 10.0


def split(frame: pd.DataFrame, config: TrainConfig, label: str = DEFAULT_LABEL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out), stratified by class so every class is in both; DataValidationError when it cannot be."""
    from sklearn.model_selection import train_test_split

    check_split(frame[label], config.test_size)
    try:
        return train_test_split(
            frame, test_size=config.test_size, random_state=config.random_state, stratify=frame[label]
        )
    except ValueError as exc:  # a case check_split does not foresee
        raise DataValidationError(f"cannot split the data: {exc}") from None


def needs_scaling(features: pd.DataFrame) -> bool:
    """Whether the features' standard deviations differ by more than ``SCALE_RATIO`` (a constant feature counts)."""
    spreads = features.std(ddof=0).to_numpy(dtype=float)
    smallest = spreads.min()
    return bool(smallest == 0 or spreads.max() / smallest > SCALE_RATIO)


def fit(train: pd.DataFrame, config: TrainConfig, features: list[str] | None = None, label: str = DEFAULT_LABEL):
    """The classifier fitted on ``train``'s features (named columns, so it knows them; every column but the
    label unless told) and labels: a LogisticRegression, or a Pipeline of a StandardScaler and one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = features if features is not None else [c for c in train.columns if c != label]
    classifier = LogisticRegression(
        max_iter=config.max_iter, solver=config.solver, C=config.C, random_state=config.random_state
    )
    estimator = make_pipeline(StandardScaler(), classifier) if needs_scaling(train[features]) else classifier
    return estimator.fit(train[features], train[label])


def is_scaled(estimator) -> bool:
    """Whether the fitted estimator standardises its features itself (a Pipeline that starts with a scaler)."""
    return hasattr(estimator, "steps")


def observed_ranges(train: pd.DataFrame, features: list[str]) -> dict[str, tuple[float, float]]:
    """Each feature's (min, max) in the training split: the contract's soft bounds."""
    return {name: (float(train[name].min()), float(train[name].max())) for name in features}


def readiness_row(estimator, train: pd.DataFrame, features: list[str], label: str) -> Readiness:
    """The training row the fitted model gives the highest probability of its true class, and that class.

    A sound version answers it right with room to spare, so a version that does not is broken.
    """
    probabilities = estimator.predict_proba(train[features])
    classes = [str(c) for c in estimator.classes_]
    truth = np.array([classes.index(value) for value in train[label]])
    best = int(np.argmax(probabilities[np.arange(len(truth)), truth]))
    row = train[features].iloc[best]
    return Readiness(tuple(float(value) for value in row), classes[truth[best]])


def trained_contract(contract: TableContract, train: pd.DataFrame, estimator) -> TableContract:
    """The contract logged with a version: the training split's ranges as soft bounds, and a readiness row.

    A contract that names its readiness row (Iris's, or one a person wrote) keeps it.
    """
    features, label = list(contract.feature_names), contract.label
    logged = contract.with_observed(observed_ranges(train, features))
    if logged.readiness is None:
        logged = logged.with_readiness(readiness_row(estimator, train, features, label))
    return logged
