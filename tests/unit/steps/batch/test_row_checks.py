"""The row checks both engines share: every bad value gets a reason, and the rules are the proxy's."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_core.table.contract import Feature, TableContract
from iris_core.table.iris import IRIS
from iris_core.table.models import PROJECT_OUTPUTS
from iris_core.table.rules import Bounds
from steps.batch.rows import check_chunk, check_input_columns, file_format
from steps.batch_predict import BatchJob, default_rejects_path
from steps.common.errors import InvalidParameter, StepError

FEATURES = IRIS.feature_names


def frame(**columns) -> pd.DataFrame:
    base = {name: ["5.1"] * len(next(iter(columns.values()))) for name in FEATURES}
    return pd.DataFrame({**base, **columns})


def reasons_for(values, dtype=None) -> list:
    chunk = frame(sepal_length=pd.Series(values, dtype=dtype))
    return check_chunk(chunk, IRIS)[1].tolist()


def test_numbers_written_as_text_pass_and_are_parsed():
    features, reasons = check_chunk(frame(sepal_length=["5.1", " 2 ", "+3", "1e2", ".5", "6."]), IRIS)
    assert reasons.isna().all()
    assert features["sepal_length"].tolist() == [5.1, 2.0, 3.0, 100.0, 0.5, 6.0]


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "sepal_length: missing"),
        ("", "sepal_length: missing"),
        ("   ", "sepal_length: missing"),
        ("abc", "sepal_length: must be a number, got a string"),
        ("nan", "sepal_length: must be a number, got a string"),
        ("inf", "sepal_length: must be a number, got a string"),
        ("0x1p3", "sepal_length: must be a number, got a string"),
        ("1e999", "sepal_length: must be finite"),
        ("0", "sepal_length: must be > 0 and <= 1e+06, got 0"),
        ("-2.5", "sepal_length: must be > 0 and <= 1e+06, got -2.5"),
        ("1000001", "sepal_length: must be > 0 and <= 1e+06, got 1000001"),
    ],
)
def test_each_kind_of_bad_text_value_gets_its_reason(value, reason):
    assert reasons_for(["5.1", value]) == [None, reason]


def test_typed_values_are_checked_by_value():
    assert reasons_for([5.1, np.nan, np.inf, -1.0, 1e6], "float64") == [
        None,
        "sepal_length: missing",
        "sepal_length: must be finite",
        "sepal_length: must be > 0 and <= 1e+06, got -1",
        None,
    ]


@pytest.mark.parametrize("values, dtype", [([True, False], "bool"), (["2020-01-01", "2021-01-01"], "datetime64[ns]")])
def test_booleans_and_timestamps_are_not_numbers(values, dtype):
    assert all(r.startswith("sepal_length: must be a number, got") for r in reasons_for(values, dtype))


def test_every_failing_column_is_named_in_one_reason():
    chunk = frame(sepal_length=["x"], petal_width=["-1"])
    assert check_chunk(chunk, IRIS)[1].tolist() == [
        "sepal_length: must be a number, got a string; petal_width: must be > 0 and <= 1e+06, got -1"
    ]


def test_failing_values_never_reach_the_model_as_numbers():
    features, _ = check_chunk(frame(sepal_length=["-1", "2e6", "5.0"]), IRIS)
    assert np.isnan(features["sepal_length"][:2]).all() and features["sepal_length"][2] == 5.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=True), min_size=1, max_size=20))
def test_the_rules_are_the_contracts_own(values):
    """A value batch scoring refuses is one the contract (which the proxy compiles too) refuses, in its words."""
    reasons = check_chunk(frame(sepal_length=pd.Series(values, dtype="float64")), IRIS)[1].tolist()
    for value, reason in zip(values, reasons):
        problem = IRIS.rules[0].problem(value, digits=10)
        assert reason == (None if problem is None else f"sepal_length: {problem}")


def test_a_contract_with_other_rules_is_checked_by_its_own():
    contract = TableContract((Feature("count of things", "long", Bounds(ge=0)), Feature("x/y")))
    chunk = pd.DataFrame({"count of things": ["3", "-1", "2.5", "7"], "x/y": ["-5", "1", "1", "inf"]})
    features, reasons = check_chunk(chunk, contract)
    assert reasons.tolist() == [
        None,
        "count of things: must be >= 0, got -1",
        "count of things: must be an integer, got 2.5",
        "x/y: must be a number, got a string",
    ]
    assert features["x/y"].tolist()[:3] == [-5.0, 1.0, 1.0]


def test_a_file_without_a_feature_column_cannot_be_scored():
    with pytest.raises(StepError, match="input has no column petal_width"):
        check_input_columns(["id", "sepal_length", "sepal_width", "petal_length"], IRIS, PROJECT_OUTPUTS)


def test_a_file_with_an_output_column_already_in_it_is_refused():
    with pytest.raises(StepError, match="already has column prediction"):
        check_input_columns([*FEATURES, "prediction"], IRIS, PROJECT_OUTPUTS)


@pytest.mark.parametrize(
    "path, kind", [("a.csv", "csv"), ("dir/b.PARQUET", "parquet"), ("c.pq", "parquet"), ("spark-out.csv/", "csv")]
)
def test_the_format_follows_the_extension(path, kind):
    assert file_format(path) == kind


def test_an_unknown_extension_is_a_usage_error():
    with pytest.raises(InvalidParameter, match=r"output must end in \.csv or \.parquet"):
        file_format("scores.json", "output")


def test_the_rejects_file_sits_beside_the_output_in_its_format():
    assert default_rejects_path("out/scores.parquet") == "out/scores.rejects.parquet"
    assert BatchJob("in.csv", "scores.csv").validated().rejects == "scores.rejects.csv"


@pytest.mark.parametrize(
    "job, message",
    [
        (BatchJob("in.csv", "out.csv", engine="dask"), "engine must be one of pandas, spark"),
        (BatchJob("in.csv", "out.csv", chunk_size=0), "chunk_size must be a positive integer"),
        (BatchJob("in.csv", "in.csv"), "three different paths"),
        (BatchJob("in.txt", "out.csv"), "input must end in"),
    ],
)
def test_bad_job_parameters_are_refused_before_anything_runs(job, message):
    with pytest.raises(InvalidParameter, match=message):
        job.validated()
