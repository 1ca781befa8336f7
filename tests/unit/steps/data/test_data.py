"""Data tests: the validator's checks, every fallback reason, and properties of what it accepts."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris_core.table.iris import IRIS
from steps.common.errors import DataValidationError
from steps.tables.loading import MIN_ROWS, load_dataset, validate_frame
from tests.helpers.tracking import REPO

CLASSES, FEATURES, LABEL = IRIS.classes, IRIS.feature_names, IRIS.label

GOOD_CSV = (REPO / "data" / "iris.csv").read_text()


def write(tmp_path, text: str | bytes, name="iris.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def good_frame() -> pd.DataFrame:
    return pd.read_csv(REPO / "data" / "iris.csv")


def test_bundled_csv_is_the_classic_150_rows_with_species_names():
    frame = good_frame()
    assert list(frame.columns) == [*FEATURES, LABEL]
    assert len(frame) == 150
    assert frame[LABEL].value_counts().to_dict() == {name: 50 for name in CLASSES}


def test_valid_csv_is_used_as_is(tmp_path):
    data = load_dataset(write(tmp_path, GOOD_CSV))
    assert data.source == "csv" and data.fallback_reason is None
    assert len(data.frame) == 150


def test_target_column_with_numeric_labels_is_accepted_and_mapped_to_names(tmp_path):
    frame = good_frame().rename(columns={LABEL: "target"})
    frame["target"] = frame["target"].map({name: i for i, name in enumerate(CLASSES)})
    data = load_dataset(write(tmp_path, frame.to_csv(index=False)))
    assert data.source == "csv"
    assert data.frame[LABEL].tolist() == good_frame()[LABEL].tolist()


def corrupt(transform):
    frame = good_frame()
    return transform(frame).to_csv(index=False)


FALLBACK_CASES = {
    "missing file": (None, "file not found"),
    "a directory": ("DIR", "not a regular file"),
    "an empty file": ("", "file is empty"),
    "bytes that are not UTF-8": (b"sepal_length,\xff\xfe\x00garbage\n", "not UTF-8"),
    "4 columns": (corrupt(lambda f: f.drop(columns=["petal_width"])), "expected 5 columns, found 4"),
    "6 columns": (corrupt(lambda f: f.assign(extra=1.0)), "expected 5 columns, found 6"),
    "wrong column names": (corrupt(lambda f: f.rename(columns={"sepal_length": "sepal_len"})), "wrong column names"),
    "a string in a feature column": (
        corrupt(
            lambda f: f.astype({"sepal_width": object}).assign(
                sepal_width=lambda d: d["sepal_width"].where(d.index != 3, "wide")
            )
        ),
        "'sepal_width' is not numeric",
    ),
    "an unknown label": (
        corrupt(lambda f: f.assign(species=lambda d: d[LABEL].where(d.index != 7, "iris-rosa"))),
        "unknown labels ['iris-rosa']",
    ),
    "a NaN": (
        corrupt(lambda f: f.assign(petal_length=lambda d: d["petal_length"].where(d.index != 5))),
        "null values in columns ['petal_length']",
    ),
    "9 rows": (corrupt(lambda f: f.head(9)), "only 9 rows, need at least 10"),
}


def bad_csv(case: str, tmp_path) -> tuple:
    """The path of ``FALLBACK_CASES[case]`` made in ``tmp_path`` (none, a directory or a bad file), and its reason."""
    content, reason = FALLBACK_CASES[case]
    path = tmp_path / "iris.csv"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        write(tmp_path, content)
    return path, reason


@pytest.mark.parametrize("case", list(FALLBACK_CASES))
def test_bad_csv_falls_back_to_sklearn_with_the_failed_check_as_reason(case, tmp_path, caplog):
    path, reason = bad_csv(case, tmp_path)
    data = load_dataset(path)
    assert data.source == "sklearn_fallback"
    assert reason in data.fallback_reason
    assert reason in caplog.text  # the warning names the failed check
    assert len(data.frame) == 150 and set(data.frame[LABEL]) == set(CLASSES)


@pytest.mark.parametrize("case", list(FALLBACK_CASES))
def test_strict_loading_fails_on_a_bad_csv_with_the_failed_check_instead_of_falling_back(case, tmp_path):
    path, reason = bad_csv(case, tmp_path)
    with pytest.raises(DataValidationError, match="strict: no fallback") as failed:
        load_dataset(path, strict=True)
    assert reason in str(failed.value)


def test_strict_loading_uses_a_valid_csv_as_is(tmp_path):
    assert load_dataset(write(tmp_path, GOOD_CSV), strict=True).source == "csv"


def test_fallback_frame_has_the_same_columns_and_dtypes_as_a_valid_csv(tmp_path):
    from_csv = load_dataset(write(tmp_path, GOOD_CSV)).frame
    fallback = load_dataset(tmp_path / "missing.csv").frame
    assert list(fallback.columns) == list(from_csv.columns)
    assert fallback.dtypes.tolist() == from_csv.dtypes.tolist()


def test_mixed_name_and_index_labels_are_rejected():
    frame = good_frame()
    frame[LABEL] = frame[LABEL].astype(object)
    frame.loc[0, LABEL] = "1"
    with pytest.raises(DataValidationError, match="unknown labels"):
        validate_frame(frame)


def test_infinite_feature_values_are_rejected():
    frame = good_frame()
    frame.loc[2, "sepal_length"] = math.inf
    with pytest.raises(DataValidationError, match="non-finite"):
        validate_frame(frame)


def assert_invariants(frame: pd.DataFrame):
    assert list(frame.columns) == [*FEATURES, LABEL]
    assert len(frame) >= MIN_ROWS
    assert all(frame[c].dtype == np.float64 for c in FEATURES)
    assert np.isfinite(frame[list(FEATURES)].to_numpy()).all()
    assert set(frame[LABEL]) <= set(CLASSES)
    assert not frame.isna().any().any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(min_value=0, max_value=40),
    features=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=4 * 40, max_size=4 * 40),
    labels=st.lists(
        st.sampled_from([*CLASSES, "0", "1", "2", 0, 1, 2, 2.0, "x", None, True]), min_size=40, max_size=40
    ),
)
def test_any_frame_the_validator_accepts_has_the_invariants(rows, features, labels):
    frame = pd.DataFrame(np.array(features[: rows * 4]).reshape(rows, 4), columns=list(FEATURES))
    frame[LABEL] = pd.Series(labels[:rows], dtype=object)
    try:
        accepted = validate_frame(frame)
    except DataValidationError as exc:
        assert str(exc)  # rejected with a reason
    else:
        assert_invariants(accepted)


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    operation=st.sampled_from(["cell", "drop_column", "rename", "truncate", "duplicate_column", "bytes"]),
)
def test_random_corruption_is_rejected_with_a_reason_or_passes_as_valid_never_raises(data, operation, tmp_path_factory):
    frame = good_frame()
    if operation == "cell":
        row = data.draw(st.integers(0, len(frame) - 1))
        column = data.draw(st.sampled_from(list(frame.columns)))
        value = data.draw(st.one_of(st.none(), st.floats(), st.text(max_size=5), st.integers(), st.booleans()))
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
    elif operation == "drop_column":
        frame = frame.drop(columns=[data.draw(st.sampled_from(list(frame.columns)))])
    elif operation == "rename":
        frame = frame.rename(
            columns={data.draw(st.sampled_from(list(frame.columns))): data.draw(st.text(min_size=1, max_size=8))}
        )
    elif operation == "truncate":
        frame = frame.head(data.draw(st.integers(0, 20)))
    elif operation == "duplicate_column":
        frame = frame.assign(**{"copy": frame["sepal_length"]})
    path = tmp_path_factory.mktemp("corrupt") / "iris.csv"
    if operation == "bytes":
        raw = bytearray(GOOD_CSV.encode())
        for _ in range(data.draw(st.integers(1, 5))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(raw))
    else:
        path.write_text(frame.to_csv(index=False))
    loaded = load_dataset(path)  # must never raise
    if loaded.source == "csv":
        assert_invariants(loaded.frame)
    else:
        assert loaded.fallback_reason
        assert_invariants(loaded.frame)
