"""Parquet bodies (``application/vnd.apache.parquet``) as pure functions: the types MLflow converts, and the bounds."""

import decimal
import io
import json
import time
import timeit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_core.table.iris import IRIS
from serving.protocols import parquet_body, parquet_pages
from serving.protocols.rows import RowReader
from serving.protocols.scoring import IGNORED_COLUMN, Invocation, Limits, ValidationError, parse_invocation
from tests.helpers.iris import FEATURES
from tests.helpers.parquet_craft import VALUE, Lies, crafted

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


# -- files that lie about themselves (tests/helpers/parquet_craft.py) ---------------------------


def test_a_hand_written_file_that_tells_the_truth_is_read():
    assert parse(crafted(Lies(rows=3, groups=2, dictionary=2))).rows == [[VALUE] * 4] * 6


def decoded_while(body: bytes) -> tuple[ValidationError, int, float]:
    """The refusal of ``body``, the most memory pyarrow held meanwhile (bytes), and the seconds it took."""
    pool = pa.default_memory_pool()
    before, started = pool.max_memory(), time.perf_counter()
    error = refusal(body)
    return error, pool.max_memory() - before, time.perf_counter() - started


def test_a_row_group_declaring_thirty_million_rows_in_a_file_of_two_is_refused_before_anything_is_decoded():
    body = crafted(Lies(rows=30_000_000, file_rows=2, chunk_uncompressed=100))
    assert len(body) < 1024
    error, held, seconds = decoded_while(body)
    assert (error.status, error.error_code) == (400, "MALFORMED_REQUEST")
    assert "row groups hold another number of rows" in error.message
    assert held < 1024 * 1024 and seconds < 0.1


def test_a_dictionary_page_of_thirty_million_entries_behind_an_honest_row_count_is_refused_before_it_is_decoded():
    body = crafted(Lies(rows=10, dictionary=30_000_000, chunk_uncompressed=100))
    assert len(body) < 64 * 1024, "240 MB a column, compressed to kilobytes"
    error, held, seconds = decoded_while(body)
    assert (error.status, error.error_code) == (413, "REQUEST_TOO_LARGE")
    assert error.message.endswith("has a dictionary of 30000000 entries; the limit is 10000")
    assert held < 1024 * 1024 and seconds < 0.1


@pytest.mark.parametrize(
    "lies",
    [
        Lies(rows=2, group_rows=3),  # the row group says more rows than the file
        Lies(rows=2, chunk_values=3),  # the column chunk says more values than its row group's rows
        Lies(rows=2, page_values=30_000_000),  # the data page says more values than its column chunk
        Lies(rows=30_000_000, file_rows=2, group_rows=2, chunk_values=2),  # the page's run holds more
    ],
    ids=["row group", "column chunk", "data page", "run"],
)
def test_counts_that_disagree_with_each_other_are_refused_as_malformed_before_anything_is_decoded(lies):
    error, held, _ = decoded_while(crafted(lies))
    assert (error.status, error.error_code) == (400, "MALFORMED_REQUEST") and held < 1024 * 1024


def test_a_page_that_inflates_to_more_than_its_values_need_is_refused():
    body = crafted(Lies(rows=2, dictionary=2, dictionary_bytes=100_000_000, chunk_uncompressed=100))
    error, held, _ = decoded_while(body)
    assert (error.status, error.error_code) == (413, "REQUEST_TOO_LARGE")
    assert "decodes to 100000000 bytes" in error.message and held < 1024 * 1024


def test_more_row_groups_than_the_limit_are_refused_and_as_many_as_the_limit_are_read():
    assert len(parse(crafted(Lies(rows=1, groups=parquet_pages.MAX_ROW_GROUPS))).rows) == parquet_pages.MAX_ROW_GROUPS
    error = refusal(crafted(Lies(rows=1, groups=parquet_pages.MAX_ROW_GROUPS + 1)))
    assert (error.status, error.error_code) == (413, "REQUEST_TOO_LARGE") and "row groups" in error.message


def test_checking_and_reading_a_file_at_the_limits_holds_the_event_loop_no_longer_than_its_rows_as_json():
    """The row limit in as many row groups as allowed: the worst an honest file costs; JSON of the same rows for scale."""
    frame = pd.DataFrame([[5.1, 3.5, 1.4, 0.2]] * LIMITS.max_rows, columns=list(FEATURES))
    body = written(pa.Table.from_pandas(frame), row_group_size=-(-LIMITS.max_rows // parquet_pages.MAX_ROW_GROUPS))
    as_json = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()
    parquet_s = min(timeit.repeat(lambda: parse(body), number=1, repeat=3))
    json_s = min(
        timeit.repeat(
            lambda: parse_invocation("application/json", as_json, LIMITS, RowReader(IRIS)), number=1, repeat=3
        )
    )
    assert parquet_s < max(2 * json_s, 0.1), f"{parquet_s * 1000:.0f} ms against {json_s * 1000:.0f} ms for JSON"
