"""Labeled production rows as training data, checked by the data rules, and split beside the base data.

Pure functions. A labeled row (features from the prediction log, the label from the
feedback log) is training data only if it has every feature of the contract the base
data was checked against, each value passes that feature's hard rules (the rules every
scored row passes: ``iris_core.table``), and its label names one of the contract's
classes; a row that fails is counted by reason and left out, never repaired.

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

from iris_core.table.contract import TableContract
from iris_core.table.rules import Rule
from steps.common.config import TrainConfig
from steps.monitoring.live_performance import LABEL_COLUMN, LabeledRows
from steps.training.fitting import split

ORIGIN = "origin"
BASE, PRODUCTION = "base", "production"


@dataclass(frozen=True)
class ProductionRows:
    """The labeled rows fit to train on, and what was left out and why."""

    frame: pd.DataFrame  # the contract's features, then its label
    labeled: int  # joined labeled rows looked at
    rejected: Counter = field(default_factory=Counter)  # reason -> rows left out
    unmatched: int = 0
    duplicates: int = 0

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())


def row_problem(features: dict, label, contract: TableContract) -> str | None:
    """Why a labeled row (its features by name) cannot be trained on, or None. The reason names no value, so
    that rows left out for the same reason are counted together."""
    for rule in contract.rules:
        value = features.get(rule.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{rule.name} is missing"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{rule.name} is not a finite number"
        if not rule.passes(value):
            return f"{rule.name} is not {_rule_text(rule)}"
    if contract.class_of(label) is None:
        return "the label is not a class"
    return None


def _rule_text(rule: Rule) -> str:
    bounds = rule.bounds.text()
    if rule.integer:
        return f"an integer {bounds}".rstrip() if bounds else "an integer"
    return bounds


def production_rows(labeled: LabeledRows, contract: TableContract) -> ProductionRows:
    """The labeled rows that pass the contract, as training data (its features and label, labels as class names)."""
    kept, rejected = [], Counter()
    frame = labeled.frame
    names = list(contract.feature_names)
    present = [name for name in names if name in frame.columns]
    records = frame[present].to_dict(orient="records") if present else [{} for _ in range(len(frame))]
    for features, label in zip(records, frame[LABEL_COLUMN]):
        problem = row_problem(features, label, contract)
        if problem is None:
            kept.append([*(features[name] for name in names), contract.class_of(label)])
        else:
            rejected[problem] += 1
    rows = pd.DataFrame(kept, columns=[*names, contract.label]).astype({name: "float64" for name in names})
    return ProductionRows(rows, len(frame), rejected, labeled.unmatched, labeled.duplicates)


def split_with_production(
    base: pd.DataFrame, production: pd.DataFrame, config: TrainConfig, label: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out): the base data split as ``train`` splits it, plus the production rows split alike."""
    base_train, base_holdout = split(base, config, label)
    parts_train, parts_holdout = [base_train.assign(**{ORIGIN: BASE})], [base_holdout.assign(**{ORIGIN: BASE})]
    if len(production) >= 2:
        prod_train, prod_holdout = _split_production(production, config, label)
        parts_train.append(prod_train.assign(**{ORIGIN: PRODUCTION}))
        parts_holdout.append(prod_holdout.assign(**{ORIGIN: PRODUCTION}))
    elif len(production):
        parts_train.append(production.assign(**{ORIGIN: PRODUCTION}))  # one row cannot be split
    return pd.concat(parts_train, ignore_index=True), pd.concat(parts_holdout, ignore_index=True)


def _split_production(production: pd.DataFrame, config: TrainConfig, label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified by class when every class present has rows enough for both sides, else at random."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            production, test_size=config.test_size, random_state=config.random_state, stratify=production[label]
        )
    except ValueError:
        return train_test_split(production, test_size=config.test_size, random_state=config.random_state)


def production_comparison(holdout: pd.DataFrame, label: str, predicted, champion_predicted=None) -> dict[str, float]:
    """Accuracy on the held-out production rows, the challenger's and (when given) the champion's."""
    if ORIGIN not in holdout.columns:
        return {}
    mask = (holdout[ORIGIN] == PRODUCTION).to_numpy()
    rows = int(mask.sum())
    metrics = {"production_holdout_rows": float(rows)}
    if not rows:
        return metrics
    truth = holdout[label].astype(str).to_numpy()[mask]
    metrics["production_accuracy"] = float((pd.Series(predicted).to_numpy()[mask] == truth).mean())
    if champion_predicted is not None:
        metrics["champion_production_accuracy"] = float(
            (pd.Series(champion_predicted).to_numpy()[mask] == truth).mean()
        )
    return metrics
