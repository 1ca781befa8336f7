"""The validation rules as pure functions: every format, every refusal, no server needed."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_core.schema import FEATURES
from serving.config import ServingConfig, parse_model_uri
from serving.errors import ConfigError
from serving.validation import Limits, ValidationError, invocation_rows, predict_row

JSON = "application/json"
LIMITS = Limits(max_rows=10)
ROWS = [[5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]]
RECORDS = [dict(zip(FEATURES, row)) for row in ROWS]


def rows_of(document, content_type=JSON, limits=LIMITS):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return invocation_rows(content_type, body, limits)


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
    assert invocation_rows("text/csv; charset=utf-8", body, LIMITS) == ROWS


def test_integers_are_accepted_as_numbers():
    assert rows_of({"dataframe_records": [dict(zip(FEATURES, [5, 3, 1, 1]))]}) == [[5.0, 3.0, 1.0, 1.0]]


def test_predict_takes_one_object_with_the_four_features():
    assert predict_row(JSON, json.dumps(RECORDS[0]).encode()) == ROWS[0]


def test_predict_names_every_bad_field():
    body = json.dumps({**RECORDS[0], "sepal_width": "3.5", "petal_length": -1.4}).encode()
    with pytest.raises(ValidationError) as caught:
        predict_row(JSON, body)
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


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe{}", b'{"a": NaN}', b"[" * 5000, b'{"dataframe_records": []} x'])
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
        {"dataframe_records": RECORDS, "extra": 1},
        {"dataframe_records": RECORDS, "params": {"threshold": 1}},
        {"dataframe_split": {"data": ROWS}},
        {"dataframe_split": {"columns": list(FEATURES), "data": [[1, 2, 3]]}},
        {"dataframe_split": {"columns": list(FEATURES), "data": [{"a": 1}]}},
        {"dataframe_records": {"sepal_length": 1}},
        {"dataframe_records": [[1, 2, 3, 4]]},
        {"inputs": {name: [1, 2] if name != "petal_width" else [1] for name in FEATURES}},
        {"inputs": {name: 1 for name in FEATURES}},
        {"dataframe_records": []},
    ],
)
def test_bodies_that_are_not_the_protocol_are_refused_with_400_invalid_format(document):
    error = refusal(document)
    assert (error.status, error.error_code) == (400, "INVALID_FORMAT")


def test_missing_and_extra_columns_are_named():
    record = {**RECORDS[0], "colour": 1}
    del record["petal_width"]
    error = refusal({"dataframe_records": [record]})
    assert (error.status, error.error_code) == (400, "INVALID_COLUMNS")
    assert "missing column: petal_width" in error.details
    assert "unexpected column: colour" in error.details


def test_a_repeated_column_is_refused():
    error = refusal({"dataframe_split": {"columns": [*FEATURES, "sepal_length"], "data": [[1, 1, 1, 1, 1]]}})
    assert error.error_code == "INVALID_COLUMNS"
    assert "repeated column: sepal_length" in error.details


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


def test_a_csv_row_with_the_wrong_number_of_fields_is_refused():
    error = refusal(f"{','.join(FEATURES)}\n1,2,3\n".encode(), "text/csv")
    assert error.error_code == "INVALID_FORMAT"


def test_more_rows_than_the_limit_are_refused_with_413():
    error = refusal({"dataframe_records": RECORDS * 6}, limits=Limits(max_rows=11))
    assert (error.status, error.error_code) == (413, "TOO_MANY_ROWS")


def test_details_are_capped_and_never_carry_the_value_or_a_long_name():
    records = [{**RECORDS[0], "sepal_width": "x" * 10_000} for _ in range(50)]
    error = refusal({"dataframe_records": records}, limits=Limits(max_rows=100))
    assert len(error.details) == 10
    assert "xxxx" not in error.message + "".join(error.details)
    long_name = refusal({"dataframe_records": [{**RECORDS[0], "y" * 10_000: 1}]})
    assert max(len(detail) for detail in long_name.details) <= 200


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "dataframe_split",
                        "dataframe_records",
                        "instances",
                        "inputs",
                        "columns",
                        "data",
                        "params",
                        *FEATURES,
                    ]
                )
                | st.text(max_size=6),
                children,
                max_size=5,
            )
        ),
        max_leaves=30,
    )
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
    assert not ServingConfig(model_uri="models:/iris/3").follows_alias
    assert not ServingConfig(upstream="http://127.0.0.1:5001").follows_alias


def test_model_uris_other_than_an_alias_or_a_version_are_refused():
    assert parse_model_uri("models:/iris@champion").alias == "champion"
    assert parse_model_uri("models:/iris/3").version == "3"
    for uri in ("runs:/abc/model", "models:/iris", "models:/iris/latest", "/tmp/model"):
        with pytest.raises(ConfigError):
            parse_model_uri(uri)
