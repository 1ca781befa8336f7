"""Which contract a table is checked against, what is inferred from one, and every check that refuses it."""

import math

import numpy as np
import pandas as pd
import pytest

from iris_core.table.contract import Feature, TableContract
from iris_core.table.iris import IRIS
from iris_core.table.rules import Bounds
from steps.common.config import TableSpec
from steps.common.errors import DataValidationError, InvalidParameter
from steps.tables.checks import check_split, infer_contract
from steps.tables.loading import load_dataset
from tests.helpers.tables import SLASHED, SPACED, WINE_LABEL, wine_frame, write_breast_cancer, write_wine
from tests.helpers.tracking import REPO


def wine_spec(path, **kwargs) -> TableSpec:
    return TableSpec(str(path), WINE_LABEL, "wine", **kwargs)


def test_every_column_but_the_label_is_a_double_feature_named_as_written(tmp_path):
    data = load_dataset(wine_spec(write_wine(tmp_path / "wine.csv")))
    contract = data.contract
    assert contract.origin == "inferred" and contract.name == "wine" and contract.label == WINE_LABEL
    assert contract.feature_names == tuple(c for c in wine_frame().columns if c != WINE_LABEL)
    assert SPACED in contract.feature_names and SLASHED in contract.feature_names
    assert {f.type for f in contract.features} == {"double"} and all(f.rules.empty for f in contract.features)
    assert list(data.frame.columns) == [*contract.feature_names, WINE_LABEL]
    assert all(data.frame[name].dtype == np.float64 for name in contract.feature_names)


def test_integer_labels_become_the_classes_as_text_sorted_as_scikit_learn_sorts_them(tmp_path):
    data = load_dataset(TableSpec(str(write_breast_cancer(tmp_path / "cancer.csv")), "diagnosis", "cancer"))
    assert data.contract.classes == ("0", "1")
    assert set(data.frame["diagnosis"]) == {"0", "1"} and len(data.contract.features) == 30
    frame = pd.DataFrame({"x": range(40), "y": ["b", "a", "10", "9"] * 10})
    contract, _ = infer_contract(frame, "y")
    assert contract.classes == ("10", "9", "a", "b")


BROKEN = {
    "a string in a feature": (
        lambda f: f.astype({"ash": object}).assign(ash=lambda d: d["ash"].where(d.index != 4, "salty")),
        "feature column 'ash' is not numeric",
    ),
    "a boolean feature": (lambda f: f.assign(flag=f["alcohol"] > 13), "feature column 'flag' is not numeric"),
    "a null": (lambda f: f.assign(hue=f["hue"].where(f.index != 9)), "null values in columns ['hue']"),
    "a null label": (
        lambda f: f.astype({WINE_LABEL: object}).assign(**{WINE_LABEL: lambda d: d[WINE_LABEL].where(d.index != 2)}),
        "null values in columns ['class']",
    ),
    "an infinite value": (
        lambda f: f.assign(proline=f["proline"].where(f.index != 3, math.inf)),
        "non-finite feature values in column 'proline'",
    ),
    "too few rows": (lambda f: f.head(9), "only 9 rows, need at least 10"),
    "one class": (lambda f: f[f[WINE_LABEL] == 1], "the label column 'class' holds one class ('1')"),
    "no label column": (
        lambda f: f.drop(columns=[WINE_LABEL]),
        "no label column 'class' in the table (name it with --label; columns: 'alcohol', 'malic acid'",
    ),
    "a class of one row": (lambda f: f.iloc[:60].assign(**{WINE_LABEL: [0] * 59 + [2]}), "class '2' has 1 row"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_table_is_refused_naming_the_check_and_never_falls_back(case, tmp_path):
    transform, words = BROKEN[case]
    path = write_wine(tmp_path / "wine.csv", transform)
    with pytest.raises(DataValidationError) as refused:
        data = load_dataset(wine_spec(path))
        from steps.common.config import TrainConfig
        from steps.training.fitting import split

        split(data.frame, TrainConfig(), data.label)
    message = str(refused.value)
    assert words in message and "\n" not in message
    if case not in ("a class of one row",):
        assert message.startswith(f"data check failed for {path}: ")


def test_a_missing_table_other_than_iris_is_refused_not_replaced_by_iris(tmp_path):
    with pytest.raises(DataValidationError, match="file not found"):
        load_dataset(wine_spec(tmp_path / "nowhere.csv"))
    # the same missing file with the Iris defaults still falls back, as it always did
    assert load_dataset(TableSpec(str(tmp_path / "nowhere.csv"))).source == "sklearn_fallback"


def test_iris_csv_under_another_model_name_is_inferred_not_curated():
    data = load_dataset(TableSpec(str(REPO / "data" / "iris.csv"), model_name="flowers"))
    assert data.contract.origin == "inferred" and data.contract.feature_names == IRIS.feature_names
    assert data.contract.classes == IRIS.classes and all(f.rules.empty for f in data.contract.features)
    assert load_dataset(TableSpec(str(REPO / "data" / "iris.csv"))).contract is IRIS


def test_the_hard_rules_of_the_iris_contract_now_apply_to_its_training_data(tmp_path, caplog):
    frame = pd.read_csv(REPO / "data" / "iris.csv")
    frame.loc[[3, 8], "petal_width"] = -0.2
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    data = load_dataset(TableSpec(str(path)))
    assert data.source == "sklearn_fallback"
    assert (
        data.fallback_reason
        == "2 values of feature 'petal_width' break its hard rule: must be > 0 and <= 1e+06, got -0.2"
    )
    with pytest.raises(DataValidationError, match="break its hard rule"):
        load_dataset(TableSpec(str(path), strict=True))


def written(tmp_path, contract: TableContract):
    path = tmp_path / "contract.yaml"
    path.write_text(contract.to_yaml())
    return path


def test_a_written_contract_that_tightens_a_rule_refuses_training_rows_that_break_it(tmp_path):
    inferred = load_dataset(wine_spec(write_wine(tmp_path / "wine.csv"))).contract
    tightened = TableContract(
        tuple(
            Feature(f.name, f.type, Bounds(ge=0, le=1000) if f.name == "proline" else f.rules)
            for f in inferred.features
        ),
        label=WINE_LABEL,
        name="wine",
    )
    spec = wine_spec(tmp_path / "wine.csv", contract=str(written(tmp_path, tightened)))
    with pytest.raises(DataValidationError) as refused:
        load_dataset(spec)
    assert str(refused.value).endswith(
        "values of feature 'proline' break its hard rule: must be >= 0 and <= 1000, got 1065"
    )
    breaking = int((wine_frame()["proline"] > 1000).sum())
    assert str(refused.value).startswith(f"data check failed for {tmp_path / 'wine.csv'}: {breaking} values")


def test_a_written_contract_pins_features_classes_and_label_and_training_fills_in_the_rest(tmp_path):
    write_wine(tmp_path / "wine.csv")
    document = {
        "name": "cellar",
        "features": [{"name": name} for name in wine_frame().columns if name != WINE_LABEL],
        "label": WINE_LABEL,
        "classes": ["0", "1", "2"],
    }
    (tmp_path / "contract.yaml").write_text(__import__("yaml").safe_dump(document))
    data = load_dataset(
        TableSpec(str(tmp_path / "wine.csv"), model_name="wine", contract=str(tmp_path / "contract.yaml"))
    )
    assert data.contract.origin == "written" and data.contract.name == "cellar"
    assert data.contract.classes == ("0", "1", "2") and data.contract.readiness is None
    with pytest.raises(InvalidParameter, match="names the label column 'class', --label says 'kind'"):
        load_dataset(TableSpec(str(tmp_path / "wine.csv"), "kind", "wine", contract=str(tmp_path / "contract.yaml")))


def test_a_written_contract_refuses_a_table_with_other_columns_or_unknown_classes(tmp_path):
    features = tuple(Feature(name) for name in wine_frame().columns if name not in (WINE_LABEL, "ash"))
    path = written(tmp_path, TableContract(features, label=WINE_LABEL))
    with pytest.raises(DataValidationError, match=r"expected 13 columns, found 14"):
        load_dataset(wine_spec(write_wine(tmp_path / "wine.csv"), contract=str(path)))
    classes = written(tmp_path, TableContract((*features, Feature("ash")), label=WINE_LABEL, classes=("0", "1")))
    with pytest.raises(DataValidationError, match=r"unknown labels \['2'\]"):
        load_dataset(wine_spec(tmp_path / "wine.csv", contract=str(classes)))


def test_a_split_that_cannot_hold_every_class_on_both_sides_is_refused_before_training():
    with pytest.raises(DataValidationError, match="the held-out split would have 2 rows for 3 classes"):
        check_split(pd.Series(["a"] * 4 + ["b"] * 3 + ["c"] * 3), 0.2)
    check_split(pd.Series(["a", "b", "c"] * 5), 0.2)
