"""Splitting the data and fitting the classifier: scikit-learn only, no MLflow."""

import pandas as pd

from iris_core.schema import FEATURES, LABEL
from steps.config import TrainConfig
from steps.errors import StepError


def split(frame: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out), stratified by class so every class is in both."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            frame, test_size=config.test_size, random_state=config.random_state, stratify=frame[LABEL]
        )
    except ValueError as exc:  # too few rows of a class for a stratified split
        raise StepError(f"cannot split the data: {exc}") from None


def fit(train: pd.DataFrame, config: TrainConfig):
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression(
        max_iter=config.max_iter, solver=config.solver, C=config.C, random_state=config.random_state
    )
    return estimator.fit(train[list(FEATURES)], train[LABEL])
