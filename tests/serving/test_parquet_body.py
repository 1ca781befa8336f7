"""Parquet bodies (``application/vnd.apache.parquet``) as pure functions: the types MLflow converts, and the bounds."""

import decimal
import io
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_core.table.iris import IRIS
from serving import parquet_body
from serving.rows import RowReader
from serving.validation import IGNORED_COLUMN, Invocation, Limits, ValidationError, parse_invocation
from tests.iris import FEATURES

PARQUET = "application/vnd.apache.parquet"
ROWS = [[5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]]
FRAME = pd.DataFrame(ROWS, columns=list(FEATURES))
LIMITS = Limits()


def parse(body: bytes, limits: Limits = LIMITS) -> Invocation:
    return parse_invocation(PARQUET, body, limits, RowReader(IRIS))


def refusal(body: bytes, limits: Limits = LIMITS) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse(body, limits)
    return caught.value


def written(table: pa.Table, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def test_what_pandas_writes_is_read_in_feature_order_with_or_without_its_index():
    assert parse(FRAME.to_parquet()) == Invocation(ROWS)
    assert parse(FRAME.to_parquet(index=False)) == Invocation(ROWS)
    assert parse(FRAME.set_index(pd.Index([7, 9], name="request")).to_parquet()) == Invocation(ROWS)
    assert parse(FRAME[list(reversed(FEATURES))].to_parquet()) == Invocation(ROWS)


def test_columns_that_are_not_features_are_ignored_and_reported():
    assert parse(FRAME.assign(colour=["red", "blue"]).to_parquet()) == Invocation(ROWS, frozenset({IGNORED_COLUMN}))


def test_a_named_index_is_not_a_column_even_when_it_carries_a_feature_name():
    indexed = FRAME.set_index("sepal_length")
    assert refusal(indexed.to_parquet()).details == ["missing column: sepal_length"]


@pytest.mark.parametrize("dtype", ["float16", "float32", "int8", "int16", "int32", "uint8", "uint16", "uint32"])
def test_the_numeric_types_mlflow_converts_to_double_are_read(dtype):
    assert parse((FRAME * 0 + 2).astype(dtype).to_parquet()).rows == [[2.0] * 4] * 2


def test_decimals_and_dictionary_encoded_numbers_are_read():
    decimals = pa.table({name: pa.array([decimal.Decimal("1.5")], pa.decimal128(4, 2)) for name in FEATURES})
    assert parse(written(decimals)).rows == [[1.5] * 4]
    assert parse(FRAME.astype("category").to_parquet()).rows == ROWS


def test_int64_is_read_only_when_every_value_is_0_or_1_as_mlflow_converts_it():
    assert parse((FRAME * 0 + 1).astype("int64").to_parquet()).rows == [[1.0] * 4] * 2
    error = refusal((FRAME * 0 + 2).astype("int64").to_parquet())
    assert error.error_code == "INVALID_VALUE" and error.details[0].startswith("column sepal_length: int64 values")


@pytest.mark.parametrize(
    ("column", "problem"),
    [
        (pa.array(["5.1", "7.7"]), "must be a number, got a string"),
        (pa.array([True, False]), "must be a number, got a boolean"),
        (pa.array([1, 2], pa.uint64()), "got uint64"),
        (pa.array([[1.0], [2.0]]), "must be a number, got list"),
        (pa.array([None, None], pa.null()), "must be a number, got null"),
    ],
)
def test_a_feature_column_of_another_type_is_refused_by_name_before_it_is_read(column, problem):
    table = pa.table({**{name: pa.array([1.0, 2.0]) for name in FEATURES[1:]}, "sepal_length": column})
    error = refusal(written(table))
    assert (error.status, error.error_code) == (400, "INVALID_VALUE")
    assert error.details[0].startswith("column sepal_length: ") and problem in error.details[0]


def test_missing_and_non_finite_values_and_values_out_of_range_are_refused_by_row_and_column():
    frame = FRAME.copy()
    frame.loc[0, "sepal_width"] = float("nan")  # pandas writes NaN as a missing value
    frame.loc[1, "petal_length"] = 2e6
    assert refusal(frame.to_parquet()).details == [
        "row 0, column sepal_width: must be a number, got null",
        "row 1, column petal_length: must be > 0 and <= 1e+06, got 2e+06",
    ]
    table = pa.table({name: pa.array([1.0, float("inf") if name == "petal_width" else 1.0]) for name in FEATURES})
    assert refusal(written(table)).details == ["row 1, column petal_width: must be finite"]


@pytest.mark.parametrize("body", [b"", b"PAR1", b"PAR1garbage PAR1", b"not parquet at all"])
def test_a_body_that_is_not_parquet_is_refused_with_400_malformed_request(body):
    assert refusal(body).error_code == "MALFORMED_REQUEST"


def test_no_rows_and_more_rows_than_the_limit_are_refused_from_the_metadata():
    assert refusal(FRAME.iloc[:0].to_parquet()).error_code == "INVALID_FORMAT"
    error = refusal(pd.concat([FRAME] * 6).to_parquet(), Limits(max_rows=11))
    assert (error.status, error.error_code) == (413, "TOO_MANY_ROWS")


def test_feature_columns_that_declare_more_decoded_bytes_than_their_rows_need_are_refused(monkeypatch):
    monkeypatch.setattr(parquet_body, "_BYTES_PER_VALUE", 0)
    monkeypatch.setattr(parquet_body, "_BYTES_PER_COLUMN_CHUNK", 0)
    error = refusal(FRAME.to_parquet())
    assert (error.status, error.error_code) == (413, "REQUEST_TOO_LARGE")


def test_an_extra_column_that_decodes_to_half_a_gigabyte_is_never_decoded():
    notes = pa.DictionaryArray.from_arrays(pa.array([0] * 10_000, pa.int32()), pa.array(["x" * 50_000]))
    table = pa.table({**{name: pa.array([1.0] * 10_000) for name in FEATURES}, "notes": notes})
    body = written(table, compression="zstd", store_schema=False)  # a reader would decode plain strings
    assert len(body) < 1024 * 1024, "a body the default --max-body-bytes lets in"
    pool = pa.default_memory_pool()
    before, started = pool.max_memory(), time.perf_counter()
    assert len(parse(body).rows) == 10_000
    assert pool.max_memory() - before < 50 * 1024 * 1024 and time.perf_counter() - started < 5


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 2000), length=st.integers(1, 64), noise=st.binary(min_size=1, max_size=64))
def test_a_damaged_parquet_file_is_refused_as_a_client_error(start, length, noise):
    body = bytearray(FRAME.assign(colour=["a", "b"]).to_parquet())
    start %= len(body)
    body[start : start + length] = noise[: max(1, min(length, len(body) - start))]
    try:
        parse(bytes(body))
    except ValidationError as error:
        assert 400 <= error.status < 500
