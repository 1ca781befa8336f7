"""The row checks both engines share: every bad value gets a reason, and the rules are the proxy's."""

import numpy as np
import pandas as pd
import pytest

from iris_core.schema import FEATURES
from steps import batch_rows
from steps.batch_predict import BatchJob, default_rejects_path
from steps.batch_rows import check_chunk, check_input_columns, file_format
from steps.errors import InvalidParameter, StepError


def frame(**columns) -> pd.DataFrame:
    base = {name: ["5.1"] * len(next(iter(columns.values()))) for name in FEATURES}
    return pd.DataFrame({**base, **columns})


def reasons_for(values, dtype=None) -> list:
    chunk = frame(sepal_length=pd.Series(values, dtype=dtype))
    return check_chunk(chunk)[1].tolist()


def test_numbers_written_as_text_pass_and_are_parsed():
    features, reasons = check_chunk(frame(sepal_length=["5.1", " 2 ", "+3", "1e2", ".5", "6."]))
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
    assert check_chunk(chunk)[1].tolist() == [
        "sepal_length: must be a number, got a string; petal_width: must be > 0 and <= 1e+06, got -1"
    ]


def test_failing_values_never_reach_the_model_as_numbers():
    features, _ = check_chunk(frame(sepal_length=["-1", "2e6", "5.0"]))
    assert np.isnan(features["sepal_length"][:2]).all() and features["sepal_length"][2] == 5.0


def test_the_limits_are_the_serving_proxys():
    from serving import validation

    assert batch_rows.MAX_VALUE == validation.MAX_VALUE
    assert batch_rows.NUMBER.pattern == validation.NUMBER.pattern


def test_a_file_without_a_feature_column_cannot_be_scored():
    with pytest.raises(StepError, match="input has no column petal_width"):
        check_input_columns(["id", "sepal_length", "sepal_width", "petal_length"])


def test_a_file_with_an_output_column_already_in_it_is_refused():
    with pytest.raises(StepError, match="already has column prediction"):
        check_input_columns([*FEATURES, "prediction"])


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
