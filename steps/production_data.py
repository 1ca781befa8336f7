"""Labeled production rows as training data, checked by the data rules, and split beside the base data.

Pure functions. A labeled row (features from the prediction log, the label from the
feedback log) is training data only if it passes the value rules every scored row passes
(``iris_core.schema``: a finite number in (0, MAX_VALUE] per feature) and its label is a
class; a row that fails is counted by reason and left out, never repaired.

The base data is split exactly as ``train`` splits it (same ``test_size`` and
``random_state``), so a version trained on the same base data never saw the base rows of
the held-out split; the production rows are split on their own with the same settings
and added to each side. Every row carries its ``origin`` (``base`` or ``production``), so
the gate can say how the challenger and the champion did on the production rows held out.
"""

import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from iris_core.schema import CLASSES, FEATURES, LABEL, MAX_VALUE
from steps.config import TrainConfig
from steps.live_performance import LABEL_COLUMN, LabeledRows
from steps.training import split

ORIGIN = "origin"
BASE, PRODUCTION = "base", "production"


@dataclass(frozen=True)
class ProductionRows:
    """The labeled rows fit to train on, and what was left out and why."""

    frame: pd.DataFrame  # FEATURES + LABEL
    labeled: int  # joined labeled rows looked at
    rejected: Counter = field(default_factory=Counter)  # reason -> rows left out
    unmatched: int = 0
    duplicates: int = 0

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())


def row_problem(features: list, label) -> str | None:
    """Why a labeled row cannot be trained on, or None."""
    for name, value in zip(FEATURES, features):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name} is not a finite number"
        if not 0 < value <= MAX_VALUE:
            return f"{name} is not > 0 and <= {MAX_VALUE:g}"
    if label not in CLASSES:
        return "the label is not a class"
    return None


def production_rows(labeled: LabeledRows) -> ProductionRows:
    """The labeled rows that pass the data rules, as training data (features and species)."""
    kept, rejected = [], Counter()
    frame = labeled.frame
    for values, label in zip(frame[list(FEATURES)].itertuples(index=False, name=None), frame[LABEL_COLUMN]):
        problem = row_problem(list(values), label)
        if problem is None:
            kept.append([*values, label])
        else:
            rejected[problem] += 1
    rows = pd.DataFrame(kept, columns=[*FEATURES, LABEL]).astype({name: "float64" for name in FEATURES})
    return ProductionRows(rows, len(frame), rejected, labeled.unmatched, labeled.duplicates)


def split_with_production(
    base: pd.DataFrame, production: pd.DataFrame, config: TrainConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out): the base data split as ``train`` splits it, plus the production rows split alike."""
    base_train, base_holdout = split(base, config)
    parts_train, parts_holdout = [base_train.assign(**{ORIGIN: BASE})], [base_holdout.assign(**{ORIGIN: BASE})]
    if len(production) >= 2:
        prod_train, prod_holdout = _split_production(production, config)
        parts_train.append(prod_train.assign(**{ORIGIN: PRODUCTION}))
        parts_holdout.append(prod_holdout.assign(**{ORIGIN: PRODUCTION}))
    elif len(production):
        parts_train.append(production.assign(**{ORIGIN: PRODUCTION}))  # one row cannot be split
    return pd.concat(parts_train, ignore_index=True), pd.concat(parts_holdout, ignore_index=True)


def _split_production(production: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified by class when every class present has rows enough for both sides, else at random."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            production, test_size=config.test_size, random_state=config.random_state, stratify=production[LABEL]
        )
    except ValueError:
        return train_test_split(production, test_size=config.test_size, random_state=config.random_state)


def production_comparison(holdout: pd.DataFrame, predicted, champion_predicted=None) -> dict[str, float]:
    """Accuracy on the held-out production rows, the challenger's and (when given) the champion's."""
    if ORIGIN not in holdout.columns:
        return {}
    mask = (holdout[ORIGIN] == PRODUCTION).to_numpy()
    rows = int(mask.sum())
    metrics = {"production_holdout_rows": float(rows)}
    if not rows:
        return metrics
    truth = holdout[LABEL].to_numpy()[mask]
    metrics["production_accuracy"] = float((pd.Series(predicted).to_numpy()[mask] == truth).mean())
    if champion_predicted is not None:
        metrics["champion_production_accuracy"] = float(
            (pd.Series(champion_predicted).to_numpy()[mask] == truth).mean()
        )
    return metrics
