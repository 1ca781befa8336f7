"""The validation rules as pure functions: every format, every refusal, no server needed."""

import json

import pytest
from hypothesis import given, settings

from iris_core.table.iris import IRIS
from serving.config import ServingConfig, parse_model_uri
from serving.errors import ConfigError
from serving.protocols.rows import RowReader
from serving.protocols.scoring import (
    IGNORED_COLUMN,
    IGNORED_FIELD,
    IGNORED_PARAMS,
    Invocation,
    Limits,
    ValidationError,
    parse_invocation,
    predict_row,
)
from tests.helpers.iris import FEATURES
from tests.helpers.json_documents import any_json

JSON = "application/json"
LIMITS = Limits(max_rows=10)
ROWS = [[5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]]
RECORDS = [dict(zip(FEATURES, row)) for row in ROWS]
READER = RowReader(IRIS)


def invocation(document, content_type=JSON, limits=LIMITS) -> Invocation:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_invocation(content_type, body, limits, READER)


def rows_of(document, content_type=JSON, limits=LIMITS):
    return invocation(document, content_type, limits).rows


def refusal(document, content_type=JSON, limits=LIMITS) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        rows_of(document, content_type, limits)
    return caught.value


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_split": {"columns": list(FEATURES), "data": ROWS}},
        {"dataframe_split": {"columns": list(reversed(FEATURES)), "data": [r[::-1] for r in ROWS], "index": [7, 8]}},
        {"dataframe_records": RECORDS},
        {"instances": RECORDS},
        {"inputs": {name: [row[i] for row in ROWS] for i, name in enumerate(FEATURES)}},
        {"dataframe_records": RECORDS, "params": {}},
    ],
    ids=["split", "split-reordered", "records", "instances", "inputs", "empty-params"],
)
def test_every_protocol_format_gives_the_same_rows_in_feature_order(document):
    assert rows_of(document) == ROWS


def test_csv_with_a_header_in_any_order_gives_the_same_rows():
    body = (
        b"\xef\xbb\xbfpetal_width,sepal_length,sepal_width,petal_length\r\n0.2,5.1,3.5,1.4\r\n2.3,7.7,2.6,6.9\r\n\r\n"
    )
    assert rows_of(body, "text/csv; charset=utf-8") == ROWS


def test_integers_are_accepted_as_numbers():
    assert rows_of({"dataframe_records": [dict(zip(FEATURES, [5, 3, 1, 1]))]}) == [[5.0, 3.0, 1.0, 1.0]]


def test_predict_takes_one_object_with_the_four_features():
    assert predict_row(JSON, json.dumps(RECORDS[0]).encode(), READER) == ROWS[0]


def test_predict_names_every_bad_field():
    body = json.dumps({**RECORDS[0], "sepal_width": "3.5", "petal_length": -1.4}).encode()
    with pytest.raises(ValidationError) as caught:
        predict_row(JSON, body, READER)
    assert caught.value.details == [
        "sepal_width: must be a number, got a string",
        "petal_length: must be > 0 and <= 1e+06, got -1.4",
    ]


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"]
)
def test_other_content_types_are_refused_with_415(content_type):
    error = refusal({"dataframe_records": RECORDS}, content_type)
    assert (error.status, error.error_code) == (415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    "body", [b"", b"{", b"\xff\xfe{}", b'{"a": NaNa}', b"[" * 5000, b'{"dataframe_records": []} x']
)
def test_unparseable_json_is_refused_with_400_malformed_request(body):
    error = refusal(body)
    assert (error.status, error.error_code) == (400, "MALFORMED_REQUEST")


@pytest.mark.parametrize(
    "document",
    [
        [1, 2, 3],
        "dataframe_records",
        {},
        {"columns": list(FEATURES), "data": ROWS},
        {"dataframe_records": RECORDS, "instances": RECORDS},
        {"dataframe_records": RECORDS, "inputs": None},
        {"params": {}},
        {"dataframe_split": {"columns": list(FEATURES), "data": [[1, 2, 3]]}},
        {"dataframe_split": {"columns": list(FEATURES), "data": ROWS, "extra": 1}},
        {"dataframe_split": {"columns": list(FEATURES), "data": [ROWS[0], RECORDS[1]]}},
        {"dataframe_split": {"columns": [*FEATURES, ["x"]], "data": [[*ROWS[0], 1]]}},
        {"dataframe_split": None},
        {"dataframe_records": {"sepal_length": 1}},
        {"dataframe_records": [[1, 2, 3, 4]]},
        {"instances": [[1, 2, 3, 4]]},
        {"instances": [RECORDS[0], [1, 2, 3, 4]]},
        {"instances": [RECORDS[0], {**RECORDS[1], "extra": 1}]},
        {"inputs": [[1, 2, 3, 4]]},
        {"inputs": "sepal_length"},
        {"inputs": {name: [1, 2] if name != "petal_width" else [1] for name in FEATURES}},
        {"inputs": {**{name: [1, 2] for name in FEATURES}, "extra": [1]}},
        {"inputs": {**{name: [1, 2] for name in FEATURES}, "extra": [[1], [2, 3]]}},
        {"inputs": {}},
        {"dataframe_records": []},
    ],
)
def test_bodies_that_are_not_the_protocol_are_refused_with_400_invalid_format(document):
    error = refusal(document)
    assert (error.status, error.error_code) == (400, "INVALID_FORMAT")


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_records": [{name: 1 for name in FEATURES[:3]}]},
        {"dataframe_split": {"data": ROWS}},
        {"dataframe_split": {"columns": [0, 1, 2, 3], "data": ROWS}},
        {"dataframe_split": {"columns": list(FEATURES[:3]), "data": [RECORDS[0]]}},
        {"inputs": {name: [1] for name in FEATURES[:3]}},
        {"instances": [{name: 1 for name in FEATURES[:3]}]},
        {"prompt": "a feature is missing", **{name: 1 for name in FEATURES[1:]}},
    ],
)
def test_a_missing_feature_is_named_in_every_format(document):
    error = refusal(document)
    assert (error.status, error.error_code) == (400, "INVALID_COLUMNS")
    assert error.details[0].startswith("missing column: ")


def test_a_repeated_column_is_refused_in_a_json_frame_and_the_first_counts_in_csv():
    error = refusal({"dataframe_split": {"columns": [*FEATURES, "sepal_length"], "data": [[1, 1, 1, 1, 1]]}})
    assert error.error_code == "INVALID_COLUMNS"
    assert "repeated column: sepal_length" in error.details
    body = f"{','.join(FEATURES)},sepal_length\n5.1,3.5,1.4,0.2,9\n".encode()
    assert rows_of(body, "text/csv") == [ROWS[0]]


# -- what MLflow's scoring server accepts and the proxy reads as it does ------------------------


def test_params_the_model_does_not_declare_are_ignored_and_reported_whatever_their_value():
    for params in ({"threshold": 1}, 5, "text", [1, 2]):
        assert invocation({"dataframe_records": RECORDS, "params": params}) == Invocation(
            ROWS, frozenset({IGNORED_PARAMS})
        )
    assert invocation({"dataframe_records": RECORDS, "params": None}).ignored == frozenset()


def test_top_level_keys_beside_the_protocol_key_are_ignored_and_reported():
    assert invocation({"dataframe_split": {"columns": list(FEATURES), "data": ROWS}, "client_request_id": "a"}) == (
        Invocation(ROWS, frozenset({IGNORED_FIELD}))
    )


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_split": {"columns": [*FEATURES, "colour", 7, None], "data": [[*row, "red", 1, 2] for row in ROWS]}},
        {"dataframe_split": {"columns": list(FEATURES), "data": [{**record, "colour": 1} for record in RECORDS]}},
        {"dataframe_split": {"data": [{**record, "colour": 1} for record in RECORDS]}},
        {"dataframe_records": [{**RECORDS[0], "colour": {"any": ["value"]}}, RECORDS[1]]},
        {"instances": [{**record, "colour": [1, 2]} for record in RECORDS]},
        {"instances": {**{name: [row[i] for row in ROWS] for i, name in enumerate(FEATURES)}, "colour": ["a", "b"]}},
        {"inputs": {**{name: [row[i] for row in ROWS] for i, name in enumerate(FEATURES)}, "colour": [[1], [2]]}},
        {"inputs": [{**record, "colour": None} for record in RECORDS]},
    ],
)
def test_columns_that_are_not_features_are_ignored_and_reported(document):
    assert invocation(document) == Invocation(ROWS, frozenset({IGNORED_COLUMN}))


def test_an_object_of_columns_repeats_a_single_value_on_every_row_as_pandas_does():
    one_row = {name: value for name, value in zip(FEATURES, ROWS[0])}
    assert rows_of({"inputs": one_row}) == [ROWS[0]]
    assert rows_of({"instances": one_row}) == [ROWS[0]]
    assert rows_of({"inputs": {**one_row, "petal_width": [0.2, 0.3]}}) == [ROWS[0], [*ROWS[0][:3], 0.3]]
    assert len(rows_of({"inputs": {**one_row, "extra": [1, 2, 3]}})) == 3, "an extra column's length counts"


def test_a_split_index_must_have_one_entry_per_row_and_may_hold_anything():
    split = {"columns": list(FEATURES), "data": ROWS}
    for index in ([7, 8], ["a", "a"], [[1, 2], [3, 4]], None):
        assert rows_of({"dataframe_split": {**split, "index": index}}) == ROWS
    for index in ([7], [7, 8, 9], 7, {"a": 1}):
        assert refusal({"dataframe_split": {**split, "index": index}}).error_code == "INVALID_FORMAT"


def test_mlflows_llm_format_reads_the_whole_object_as_columns_and_answers_unwrapped():
    parsed = invocation({**RECORDS[0], "prompt": "x"})
    assert parsed == Invocation([ROWS[0]], frozenset({IGNORED_COLUMN}), unwrapped=True)
    columns = {name: [row[i] for row in ROWS] for i, name in enumerate(FEATURES)}
    assert rows_of({**columns, "messages": [1, 2]}) == ROWS
    assert rows_of({**RECORDS[0], "input": ["a", "b", "c"]}) == [ROWS[0]], "a list of strings is one value"
    assert refusal({"dataframe_split": {"columns": list(FEATURES), "data": ROWS}, "input": 1}).status == 400


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xef\xbb\xbf" + json.dumps({"dataframe_records": RECORDS}).encode(),
        json.dumps({"dataframe_records": RECORDS}).encode("utf-16"),
        json.dumps({"dataframe_records": RECORDS}).encode("utf-16-le"),
        json.dumps({"dataframe_records": RECORDS}).encode("utf-32"),
    ],
    ids=["utf-8-bom", "utf-16", "utf-16-le", "utf-32"],
)
def test_json_with_a_byte_order_mark_or_in_utf_16_or_32_is_read_as_python_reads_it(encoded):
    assert rows_of(encoded) == ROWS


def test_nan_infinity_and_huge_integers_are_read_then_refused_as_values_or_ignored_in_other_columns():
    body = (
        b'{"dataframe_records": [{"sepal_length": NaN, "sepal_width": Infinity, "petal_length": %d, "petal_width": 1}]}'
    )
    error = refusal(body % 10**400)
    assert error.details == [
        "row 0, column sepal_length: must be finite",
        "row 0, column sepal_width: must be finite",
        "row 0, column petal_length: must be > 0 and <= 1e+06, got an integer beyond 1e308",
    ]
    assert rows_of(b'{"dataframe_records": [{"x": NaN, %s}]}' % json.dumps(RECORDS[0])[1:-1].encode()) == [ROWS[0]]


def test_a_csv_that_pandas_wrote_with_its_index_is_read_without_the_index():
    written = (
        ","
        + ",".join(FEATURES)
        + "\n"
        + "".join(f"{i}," + ",".join(map(str, row)) + "\n" for i, row in enumerate(ROWS))
    )
    assert invocation(written.encode(), "text/csv") == Invocation(ROWS, frozenset({IGNORED_COLUMN}))
    implicit = ",".join(FEATURES) + "\n" + "".join(f"9,{','.join(map(str, row))}\n" for row in ROWS)
    assert rows_of(implicit.encode(), "text/csv") == ROWS, "one field more than the header: the first is the index"


def test_csv_header_names_are_taken_as_written():
    body = (" " + ",".join(FEATURES) + "\n5.1,3.5,1.4,0.2\n").encode()
    assert refusal(body, "text/csv").details == ["missing column: sepal_length"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; foo=bar",
        "application/json; charset=utf-8; foo=bar",
        "application/json;",
        "application/json; charset=utf8",
        'application/json; charset="utf-8"',
        "APPLICATION/JSON",
        "text/csv; header=present",
    ],
)
def test_content_type_parameters_and_spellings_that_mlflow_refuses_are_refused_with_415(content_type):
    error = refusal({"dataframe_records": RECORDS}, content_type)
    assert (error.status, error.error_code) == (415, "UNSUPPORTED_MEDIA_TYPE")


def test_the_charset_is_case_insensitive_and_spaces_around_parameters_do_not_matter():
    assert rows_of({"dataframe_records": RECORDS}, "application/json ;charset=UTF-8") == ROWS


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("5.1", "got a string"),
        (True, "got a boolean"),
        (None, "got null"),
        ([1], "got an array"),
        ({"v": 1}, "got an object"),
        (0, "must be > 0"),
        (-1.5, "must be > 0"),
        (1e308, "<= 1e+06"),
    ],
)
def test_each_bad_value_is_refused_naming_its_row_and_column(value, problem):
    records = [RECORDS[0], {**RECORDS[1], "petal_length": value}]
    error = refusal({"dataframe_records": records})
    assert (error.status, error.error_code) == (400, "INVALID_VALUE")
    assert error.details[0].startswith("row 1, column petal_length: ")
    assert problem in error.details[0]


@pytest.mark.parametrize("field", ["nan", "inf", "-1", "0", "", "abc", "1_000"])
def test_csv_values_that_are_not_finite_positive_numbers_are_refused(field):
    body = f"{','.join(FEATURES)}\n5.1,3.5,1.4,{field}\n".encode()
    error = refusal(body, "text/csv")
    assert (error.status, error.error_code) == (400, "INVALID_VALUE")
    assert "row 0, column petal_width" in error.details[0]


@pytest.mark.parametrize("body", [b"", b"\n\n", b"sepal_length,sepal_width\n1,2\n", b"\xff\xfe", b"a,b,c,d\n1,2,3,4\n"])
def test_csv_without_the_feature_header_is_refused(body):
    assert refusal(body, "text/csv").status == 400


def test_a_csv_row_with_too_many_fields_is_refused_and_missing_fields_are_missing_values():
    error = refusal(f"{','.join(FEATURES)}\n1,2,3,4\n1,2,3,4,5,6\n".encode(), "text/csv")
    assert error.error_code == "INVALID_FORMAT"
    error = refusal(f"{','.join(FEATURES)}\n1,2,3\n".encode(), "text/csv")
    assert error.details == ["row 0, column petal_width: must be a number, got null"]
    assert rows_of(f"{','.join(FEATURES)},extra\n1,2,3,4\n".encode(), "text/csv") == [[1, 2, 3, 4]]


def test_more_rows_than_the_limit_are_refused_with_413():
    error = refusal({"dataframe_records": RECORDS * 6}, limits=Limits(max_rows=11))
    assert (error.status, error.error_code) == (413, "TOO_MANY_ROWS")


def test_details_are_capped_and_never_carry_the_value_or_a_long_name():
    records = [{**RECORDS[0], "sepal_width": "x" * 10_000} for _ in range(50)]
    error = refusal({"dataframe_records": records}, limits=Limits(max_rows=100))
    assert len(error.details) == 10
    assert "xxxx" not in error.message + "".join(error.details)
    long_name = refusal({"y" * 10_000: 1})
    assert "y" * 41 not in long_name.message and len(long_name.message) < 300


@settings(max_examples=150, deadline=None)
@given(
    any_json(["dataframe_split", "dataframe_records", "instances", "inputs", "columns", "data", "params", *FEATURES])
)
def test_any_json_value_gives_rows_or_a_client_error(document):
    try:
        rows = rows_of(json.dumps(document).encode())
    except ValidationError as error:
        assert 400 <= error.status < 500 and error.message
    else:
        assert rows and all(len(row) == 4 and all(0 < v <= 1e6 for v in row) for row in rows)


def test_a_non_loopback_host_needs_allow_remote():
    with pytest.raises(ConfigError):
        ServingConfig(host="0.0.0.0")
    assert ServingConfig(host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    assert ServingConfig(host="::1").host == "::1"


def test_only_an_alias_served_without_pin_or_upstream_is_followed():
    assert ServingConfig().follows_alias
    assert not ServingConfig(pin=True).follows_alias
    assert not ServingConfig(model_uris=("models:/iris/3",)).follows_alias
    assert not ServingConfig(upstream="http://127.0.0.1:5001").follows_alias


def test_model_uris_other_than_an_alias_or_a_version_are_refused():
    assert parse_model_uri("models:/iris@champion").alias == "champion"
    assert parse_model_uri("models:/iris/3").version == "3"
    for uri in ("runs:/abc/model", "models:/iris", "models:/iris/latest", "/tmp/model"):
        with pytest.raises(ConfigError):
            parse_model_uri(uri)
