"""A table checked against a contract, or a contract inferred from a table: the data checks, in pandas.

A table must never be trained on unless every check passes, so each raises
``DataValidationError`` naming the check. Both ways end in the same canonical frame: the
contract's features, in its order, as float64, then its label column with each label as
the text of its class (``iris_core.table.contract.label_text``: the integer labels 0 and 1
are the classes "0" and "1").

- ``check_table``: a table against a contract that names its features (the curated Iris
  contract, or one a person wrote): exactly those columns and the label, numbers, no
  nulls, finite, enough rows, labels that name a class, and the contract's hard rules.
- ``infer_contract``: any other table. Every column but the label is a feature; features
  must be numeric (not booleans), without nulls and finite; at least ``MIN_ROWS`` rows and
  two classes. The inferred contract declares each feature ``double`` with no hard rule
  but finiteness, and the classes as scikit-learn orders them. The observed ranges and the
  readiness row come after training (``steps.training.fitting``).

The library question: pandera infers a schema from a frame and writes it as YAML, but the
project already has its one declaration (``iris_core.table``) that serving compiles too;
these few checks over pandas keep that declaration the only one, with no second schema
language to translate into it.
"""

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from iris_core.table.contract import CURATED, INFERRED, ContractError, Feature, TableContract, label_text
from steps.common.errors import DataValidationError
from steps.tables.value_rules import passes

MIN_ROWS = 10


def check_table(frame: pd.DataFrame, contract: TableContract) -> pd.DataFrame:
    """The frame in canonical form, checked against a contract that names its features; or raise.

    The curated contract takes column names with blanks around them, as Iris always did;
    a written contract's names are matched as written.
    """
    strip = contract.origin == CURATED
    columns = [str(c).strip() if strip else str(c) for c in frame.columns]
    width = len(contract.features) + 1
    if len(columns) != width:
        raise DataValidationError(f"expected {width} columns, found {len(columns)}")
    label = next((c for c in contract.label_columns if c in columns), None)
    expected = set(contract.feature_names) | {label or contract.label}
    if label is None or set(columns) != expected:
        missing = sorted(expected - set(columns))
        unexpected = sorted(set(columns) - expected)
        raise DataValidationError(f"wrong column names: missing {missing}, unexpected {unexpected}")
    frame = frame.set_axis(columns, axis=1)
    features = list(contract.feature_names)
    check_values(frame, features, label)
    labels = canonical_labels(frame[label], contract)
    result = frame[features].astype("float64")
    check_rules(result, contract)
    result[contract.label] = labels
    check_classes(result[contract.label], contract.label)
    if contract.classes:
        absent = [name for name in contract.classes if name not in set(labels)]
        if absent:
            raise DataValidationError(f"class {absent[0]!r} of the contract has no rows in the table")
    return result.reset_index(drop=True)


def infer_contract(frame: pd.DataFrame, label: str, name: str | None = None) -> tuple[TableContract, pd.DataFrame]:
    """The contract a table implies, and the table in canonical form; or raise naming the failed check."""
    columns = [str(c) for c in frame.columns]
    if label not in columns:
        shown = ", ".join(repr(c) for c in columns[:8]) + (", ..." if len(columns) > 8 else "")
        raise DataValidationError(f"no label column {label!r} in the table (name it with --label; columns: {shown})")
    if len(set(columns)) != len(columns):
        raise DataValidationError("the table names a column twice")
    frame = frame.set_axis(columns, axis=1)
    features = [c for c in columns if c != label]
    if not features:
        raise DataValidationError(f"the table has no feature column beside the label {label!r}")
    check_values(frame, features, label)
    labels = [label_text(value) for value in frame[label]]
    result = frame[features].astype("float64")
    result[label] = labels
    classes = check_classes(result[label], label)
    try:
        contract = TableContract(
            features=tuple(Feature(feature, "double") for feature in features),
            label=label,
            classes=classes,
            name=name,
            origin=INFERRED,
        )
    except ContractError as exc:
        raise DataValidationError(str(exc)) from None
    return contract, result.reset_index(drop=True)


def with_classes_of(contract: TableContract, labels: pd.Series) -> TableContract:
    """A contract that names no classes takes the table's, as scikit-learn orders them."""
    if contract.classes:
        return contract
    return replace(contract, classes=tuple(sorted(set(labels))))


def check_values(frame: pd.DataFrame, features: list[str], label: str) -> None:
    """Numeric features (not booleans), no nulls, finite values, at least ``MIN_ROWS`` rows."""
    for column in features:
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
            raise DataValidationError(f"feature column {column!r} is not numeric")
    wanted = {*features, label}
    nulls = [c for c in frame.columns if c in wanted and frame[c].isna().any()]
    if nulls:
        raise DataValidationError(f"null values in columns {nulls}")
    for column in features:
        if not np.isfinite(frame[column].to_numpy(dtype=float)).all():
            raise DataValidationError(f"non-finite feature values in column {column!r}")
    if len(frame) < MIN_ROWS:
        raise DataValidationError(f"only {len(frame)} rows, need at least {MIN_ROWS}")


def check_rules(features: pd.DataFrame, contract: TableContract) -> None:
    """Every value within its feature's hard rules (float64 features, in the contract's order)."""
    for rule in contract.rules:
        if rule.bounds.empty and not rule.integer:
            continue
        values = features[rule.name].to_numpy(dtype=float)
        refused = ~passes(rule, values)
        if refused.any():
            first = values[np.argmax(refused)]
            count = int(refused.sum())
            what = "value" if count == 1 else "values"
            raise DataValidationError(
                f"{count} {what} of feature {rule.name!r} break its hard rule: {rule.problem(float(first))}"
            )


def canonical_labels(labels: pd.Series, contract: TableContract) -> list[str]:
    """Each label as its class's name: all class names, or (where the contract allows) all class indexes."""
    as_text = [label_text(value) for value in labels]
    if not contract.classes:
        return as_text
    classes = set(contract.classes)
    if set(as_text) <= classes:
        return as_text
    by_index = {str(i): name for i, name in enumerate(contract.classes)} if contract.class_codes else {}
    if by_index and set(as_text) <= set(by_index):
        return [by_index[value] for value in as_text]
    unknown = sorted(set(as_text) - classes - set(by_index))[:5]
    raise DataValidationError(f"unknown labels {unknown}")


def check_classes(labels: pd.Series, label: str) -> tuple[str, ...]:
    """The classes (at least two), as scikit-learn orders them."""
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        only = f" ({classes[0]!r})" if classes else ""
        raise DataValidationError(f"the label column {label!r} holds one class{only}; a classifier needs at least 2")
    return classes


def check_split(labels: pd.Series, test_size: float) -> None:
    """Rows enough of every class for a stratified split into training and held-out rows of ``test_size``."""
    counts = labels.value_counts()
    if counts.min() < 2:
        name = counts.idxmin()
        raise DataValidationError(f"class {name!r} has 1 row; a stratified split needs at least 2 rows of every class")
    rows, classes = len(labels), len(counts)
    held_out = math.ceil(test_size * rows)
    for part, size in (("held-out", held_out), ("training", rows - held_out)):
        if size < classes:
            raise DataValidationError(
                f"the {part} split would have {size} rows for {classes} classes (test_size {test_size:g} of {rows} "
                "rows); a stratified split needs a row of every class on each side"
            )


def select_table(frame: pd.DataFrame, contract: TableContract, label: str) -> pd.DataFrame:
    """A table to evaluate or monitor a version on: the contract's features (other columns are left aside) and
    the label column, checked as training data is, in canonical form; or raise naming the failed check."""
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    column = label if label in columns else next((c for c in contract.label_columns if c in columns), None)
    if column is None:
        raise DataValidationError(f"no label column {label!r} in the table (name it with --label)")
    features = list(contract.feature_names)
    missing = [name for name in features if name not in columns]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataValidationError(f"the table has no column {shown}, which the model reads")
    if len(set(columns)) != len(columns):
        raise DataValidationError("the table names a column twice")
    check_values(frame, features, column)
    result = frame[features].astype("float64")
    check_rules(result, contract)
    result[column] = canonical_labels(frame[column], contract)
    return result.reset_index(drop=True)
