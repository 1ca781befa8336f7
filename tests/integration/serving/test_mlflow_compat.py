"""The proxy as a drop-in for `mlflow models serve`: the same requests to both, and MLflow's own client.

Each case goes to a bare `mlflow models serve` and to the proxy in front of it, and the
two must agree: what MLflow scores with 200 the proxy scores with the same predictions,
unless the case breaks one of the proxy's documented rules (``rule``: a string or a
boolean where a number belongs, a value that is not finite or not in (0, 1e6], too many
rows), which it refuses with that error code; what MLflow refuses with a 4xx (or fails
on with a 5xx) the proxy refuses with a short JSON 4xx. The cases are the request-level
cases of MLflow's ``tests/pyfunc/test_scoring_server.py`` that apply to a four-feature
tabular model, the incompatibilities found by pointing MLflow's tests and client at the
proxy, and the shapes pandas lets through.
"""

import importlib.metadata
import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from tests.helpers.error_bodies import ERROR_KEYS, LEAKS
from tests.helpers.iris import FEATURES

pytestmark = pytest.mark.slow

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
FRAME = pd.DataFrame(ROWS, columns=list(FEATURES))
RECORDS = FRAME.to_dict(orient="records")
SPLIT = FRAME.to_dict(orient="split")
COLUMNS = FRAME.to_dict(orient="list")


@dataclass(frozen=True)
class Case:
    name: str
    body: object  # JSON-able, or the bytes to send
    content_type: str | None = JSON
    rule: str | None = None  # the proxy's error_code when MLflow scores it but a documented rule refuses it

    def data(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def with_value(value) -> dict:
    return {"dataframe_records": [{**RECORDS[0], "petal_width": value}, RECORDS[1]]}


CASES = [
    # -- ported from MLflow's tests/pyfunc/test_scoring_server.py --------------------------------
    Case("malformed_json_input", b"this is,,,, not valid json"),
    Case("invalid_json_format_number", 1),
    Case("invalid_json_format_string", "1"),
    Case("invalid_json_format_list", [1]),
    Case("invalid_json_format_not_a_serialized_dataframe", {"not": "a serialized dataframe"}),
    Case("invalid_json_format_two_input_fields", {"dataframe_records": [], "dataframe_split": {"data": []}}),
    Case("invalid_pandas_input_format_records_as_split", {"dataframe_records": SPLIT}),
    Case("invalid_pandas_input_format_split_as_records", {"dataframe_split": RECORDS}),
    Case("invalid_dataframe", {"dataframe_split": {"index": [1, 2], "data": [[1], [2], [3]]}}),
    Case("incompatible_inference_dataframe", {"dataframe_split": pd.DataFrame(np.arange(10)).to_dict(orient="split")}),
    Case("invalid_csv_input", b"", CSV),
    Case("pandas_records_orientation", {"dataframe_records": RECORDS}),
    Case("pandas_records_orientation_with_charset", {"dataframe_records": RECORDS}, JSON + "; charset=UTF-8"),
    Case("pandas_split_orientation", {"dataframe_split": SPLIT}),
    Case("pandas_split_orientation_with_charset", {"dataframe_split": SPLIT}, JSON + "; charset=UTF-8"),
    Case("unsupported_content_type", FRAME.to_json(orient="split").encode(), "not_a_supported_content_type"),
    Case("unrecognized_content_param", FRAME.to_json(orient="split").encode(), JSON + "; something=something"),
    Case("tf_serving_instances_as_lists", {"instances": ROWS}),
    Case("param_schema_no_params", {"dataframe_split": SPLIT}, JSON + "; charset=UTF-8"),
    Case("param_schema_undeclared_param", {"dataframe_split": SPLIT, "params": {"invalid_param": "value"}}),
    Case("param_schema_param_the_model_lacks", {"dataframe_split": SPLIT, "params": {"param1": "invalid_value1"}}),
    Case(
        "json_input_with_strings", {"dataframe_split": FRAME.astype(str).to_dict(orient="split")}, rule="INVALID_VALUE"
    ),
    # -- what pointing MLflow's tests and client at the proxy found ---------------------------------
    Case("parquet_from_to_parquet", FRAME.to_parquet(), PARQUET),
    Case("parquet_without_index", FRAME.to_parquet(index=False), PARQUET),
    Case("parquet_with_named_index_and_extra_column", FRAME.assign(x="a").rename_axis("id").to_parquet(), PARQUET),
    Case("params_of_any_type", {"dataframe_split": SPLIT, "params": [1, "two"]}),
    Case("params_null", {"dataframe_split": SPLIT, "params": None}),
    Case("unknown_top_level_key", {"dataframe_split": SPLIT, "client_request_id": "abc"}),
    Case("utf8_bom", b"\xef\xbb\xbf" + json.dumps({"dataframe_split": SPLIT}).encode()),
    Case("utf16_json", json.dumps({"dataframe_records": RECORDS}).encode("utf-16")),
    Case("utf32_json", json.dumps({"dataframe_records": RECORDS}).encode("utf-32")),
    Case("extra_column_in_split", {"dataframe_split": FRAME.assign(colour="red").to_dict(orient="split")}),
    Case("extra_column_in_records", {"dataframe_records": FRAME.assign(colour=1).to_dict(orient="records")}),
    Case("extra_column_in_inputs", {"inputs": {**COLUMNS, "colour": ["a", "b", "c"]}}),
    Case("csv_from_to_csv_with_its_index", FRAME.to_csv().encode(), CSV),
    Case("csv_with_extra_column", FRAME.assign(colour="red").to_csv(index=False).encode(), CSV),
    Case("content_type_with_unknown_parameter", {"dataframe_split": SPLIT}, JSON + "; foo=bar"),
    Case("split_index_shorter_than_data", {"dataframe_split": {**SPLIT, "index": [0, 1]}}),
    Case("split_index_longer_than_data", {"dataframe_split": {**SPLIT, "index": [0, 1, 2, 3]}}),
    # -- the proxy's documented rules ---------------------------------------------------------------
    Case("string_value", with_value("0.2"), rule="INVALID_VALUE"),
    Case("boolean_value", with_value(True), rule="INVALID_VALUE"),
    Case("negative_value", with_value(-0.2), rule="INVALID_VALUE"),
    Case("zero_value", with_value(0), rule="INVALID_VALUE"),
    Case("huge_value", with_value(1e300), rule="INVALID_VALUE"),
    Case("huge_integer", with_value(10**30), rule="INVALID_VALUE"),
    Case("null_value", with_value(None)),
    Case("nan_value", json.dumps(with_value(float("nan"))).encode()),
    Case("csv_boolean_text", (",".join(FEATURES) + "\nTrue,3.5,1.4,0.2\n").encode(), CSV, rule="INVALID_VALUE"),
    Case("too_many_rows", {"dataframe_split": {"columns": list(FEATURES), "data": ROWS * 3334}}, rule="TOO_MANY_ROWS"),
    # -- content types ---------------------------------------------------------------------------
    Case("no_content_type", {"dataframe_split": SPLIT}, None),
    Case("charset_utf8_without_dash", {"dataframe_split": SPLIT}, JSON + "; charset=utf8"),
    Case("charset_quoted", {"dataframe_split": SPLIT}, JSON + '; charset="utf-8"'),
    Case("charset_latin1", {"dataframe_split": SPLIT}, JSON + "; charset=latin-1"),
    Case("media_type_in_capitals", {"dataframe_split": SPLIT}, "APPLICATION/JSON"),
    Case("spaces_around_parameters", {"dataframe_split": SPLIT}, JSON + " ; charset=utf-8"),
    Case("empty_parameter", {"dataframe_split": SPLIT}, JSON + ";"),
    Case("csv_with_header_parameter", FRAME.to_csv(index=False).encode(), CSV + "; header=present"),
    Case("parquet_with_charset", FRAME.to_parquet(), PARQUET + "; charset=utf-8"),
    Case("text_plain", {"dataframe_split": SPLIT}, "text/plain"),
    # -- dataframe_split ---------------------------------------------------------------------------
    Case("split_reordered_columns", {"dataframe_split": FRAME[list(reversed(FEATURES))].to_dict(orient="split")}),
    Case("split_without_index", {"dataframe_split": {"columns": list(FEATURES), "data": ROWS}}),
    Case("split_index_of_strings_and_repeats", {"dataframe_split": {**SPLIT, "index": ["a", "a", "b"]}}),
    Case("split_index_null", {"dataframe_split": {**SPLIT, "index": None}}),
    Case("split_index_not_a_list", {"dataframe_split": {**SPLIT, "index": 7}}),
    Case("split_integers", {"dataframe_split": {"columns": list(FEATURES), "data": [[5, 3, 1, 1]]}}),
    Case("split_without_columns", {"dataframe_split": {"data": ROWS}}),
    Case("split_columns_null", {"dataframe_split": {"columns": None, "data": ROWS}}),
    Case("split_columns_numbered", {"dataframe_split": {"columns": [0, 1, 2, 3], "data": ROWS}}),
    Case(
        "split_extra_column_named_by_a_number",
        {"dataframe_split": {"columns": [*FEATURES, 5], "data": [[*r, 1] for r in ROWS]}},
    ),
    Case(
        "split_repeated_feature",
        {"dataframe_split": {"columns": [*FEATURES, FEATURES[0]], "data": [[*r, 9] for r in ROWS]}},
    ),
    Case("split_short_row", {"dataframe_split": {"columns": list(FEATURES), "data": [[1, 2, 3]]}}),
    Case("split_short_columns", {"dataframe_split": {"columns": list(FEATURES[:3]), "data": ROWS}}),
    Case("split_empty_data", {"dataframe_split": {"columns": list(FEATURES), "data": []}}),
    Case("split_data_null", {"dataframe_split": {"columns": list(FEATURES), "data": None}}),
    Case("split_data_of_records", {"dataframe_split": {"columns": list(FEATURES), "data": RECORDS}}),
    Case("split_data_of_records_without_columns", {"dataframe_split": {"data": RECORDS}}),
    Case(
        "split_data_of_records_and_lists",
        {"dataframe_split": {"columns": list(FEATURES), "data": [RECORDS[0], ROWS[1]]}},
    ),
    Case("split_unknown_field", {"dataframe_split": {**SPLIT, "params": 1}}),
    Case("split_null", {"dataframe_split": None}),
    # -- dataframe_records, instances, inputs -------------------------------------------------------
    Case(
        "records_missing_feature",
        {"dataframe_records": [{k: v for k, v in r.items() if k != "petal_width"} for r in RECORDS]},
    ),
    Case(
        "records_one_missing_feature",
        {"dataframe_records": [RECORDS[0], {k: v for k, v in RECORDS[1].items() if k != "petal_width"}]},
    ),
    Case("records_ragged_extra", {"dataframe_records": [{**RECORDS[0], "x": 1}, RECORDS[1]]}),
    Case("records_extra_nested", {"dataframe_records": [{**RECORDS[0], "x": {"a": [1]}}]}),
    Case("records_nested_feature", {"dataframe_records": [{**RECORDS[0], "sepal_length": [5.1]}]}),
    Case("records_of_lists", {"dataframe_records": ROWS}),
    Case("records_empty", {"dataframe_records": []}),
    Case("records_null", {"dataframe_records": None}),
    Case("instances_records", {"instances": RECORDS}),
    Case("instances_records_with_extra", {"instances": [{**r, "x": 1} for r in RECORDS]}),
    Case("instances_records_ragged_extra", {"instances": [{**RECORDS[0], "x": 1}, RECORDS[1]]}),
    Case("instances_records_and_lists", {"instances": [RECORDS[0], ROWS[1]]}),
    Case("instances_columns", {"instances": COLUMNS}),
    Case("instances_one_row_of_scalars", {"instances": RECORDS[0]}),
    Case("instances_empty", {"instances": []}),
    Case("inputs_columns", {"inputs": COLUMNS}),
    Case("inputs_one_row_of_scalars", {"inputs": RECORDS[0]}),
    Case("inputs_scalars_and_lists", {"inputs": {**COLUMNS, "sepal_length": 5.1}}),
    Case("inputs_scalars_and_a_longer_extra_list", {"inputs": {**RECORDS[0], "x": [1, 2, 3, 4]}}),
    Case("inputs_extra_list_of_another_length", {"inputs": {**COLUMNS, "x": [1]}}),
    Case("inputs_extra_nested_lists", {"inputs": {**COLUMNS, "x": [[1], [2], [3]]}}),
    Case("inputs_extra_ragged_lists", {"inputs": {**COLUMNS, "x": [[1], [2, 3], [4]]}}),
    Case("inputs_extra_object", {"inputs": {**COLUMNS, "x": {"a": 1}}}),
    Case("inputs_ragged_features", {"inputs": {**COLUMNS, "petal_width": [0.2]}}),
    Case("inputs_nested_features", {"inputs": {k: [[v] for v in vs] for k, vs in COLUMNS.items()}}),
    Case("inputs_records", {"inputs": RECORDS}),
    Case(
        "inputs_records_missing_feature",
        {"inputs": [{k: v for k, v in r.items() if k != "sepal_width"} for r in RECORDS]},
    ),
    Case("inputs_lists", {"inputs": ROWS}),
    Case("inputs_empty", {"inputs": {}}),
    Case("inputs_string", {"inputs": "abc"}),
    Case("inputs_and_dataframe_split", {"dataframe_split": SPLIT, "inputs": None}),
    Case("only_params", {"params": {}}),
    # -- MLflow's LLM format: a top-level messages, prompt or input key -----------------------------
    Case("llm_prompt_beside_features", {**RECORDS[0], "prompt": "x"}),
    Case("llm_messages_beside_columns", {**COLUMNS, "messages": ["a", "b", "c"]}),
    Case("llm_strings_lists_make_one_row", {**RECORDS[0], "input": ["a", "b"]}),
    Case("llm_input_beside_a_protocol_key", {"dataframe_split": SPLIT, "input": "x"}),
    Case("llm_input_holding_the_features", {"input": RECORDS[0]}),
    # -- CSV ----------------------------------------------------------------------------------------
    Case("csv", FRAME.to_csv(index=False).encode(), CSV),
    Case("csv_with_bom", b"\xef\xbb\xbf" + FRAME.to_csv(index=False).encode(), CSV),
    Case("csv_repeated_feature", (",".join(FEATURES) + ",sepal_length\n5.1,3.5,1.4,0.2,9\n").encode(), CSV),
    Case("csv_implicit_index", (",".join(FEATURES) + "\n9,5.1,3.5,1.4,0.2\n8,6.7,3.0,5.2,2.3\n").encode(), CSV),
    Case("csv_implicit_index_on_one_row", (",".join(FEATURES) + "\n9,1,2,3,4\n1,2,3,4\n").encode(), CSV),
    Case("csv_header_only", (",".join(FEATURES) + "\n").encode(), CSV),
    Case("csv_missing_column", FRAME[list(FEATURES[:3])].to_csv(index=False).encode(), CSV),
    Case("csv_short_row", (",".join(FEATURES) + "\n1,2,3\n").encode(), CSV),
    Case("csv_short_row_missing_only_an_extra", (",".join(FEATURES) + ",x\n5.1,3.5,1.4,0.2\n").encode(), CSV),
    Case("csv_long_row", (",".join(FEATURES) + "\n1,2,3,4\n1,2,3,4,5,6\n").encode(), CSV),
    Case("csv_quoted_values_and_names", ('"' + '","'.join(FEATURES) + '"\n"5.1",3.5,1.4,0.2\n').encode(), CSV),
    Case("csv_spaces_in_header", (" " + ", ".join(FEATURES) + "\n5.1,3.5,1.4,0.2\n").encode(), CSV),
    Case("csv_spaces_around_values", (",".join(FEATURES) + "\n 5.1 , 3.5,1.4,0.2\n").encode(), CSV),
    Case("csv_number_forms", (",".join(FEATURES) + "\n+5.1,3.,.4,2e-1\n").encode(), CSV),
    Case("csv_crlf_and_blank_lines", ("\r\n" + ",".join(FEATURES) + "\r\n\r\n5.1,3.5,1.4,0.2\r\n").encode(), CSV),
    Case("csv_not_utf8", ",".join(FEATURES).encode("utf-16"), CSV),
    Case("csv_semicolons", (";".join(FEATURES) + "\n5.1;3.5;1.4;0.2\n").encode(), CSV),
    Case("csv_unclosed_quote", (",".join(FEATURES) + '\n"5.1,3.5,1.4,0.2\n').encode(), CSV),
    Case("csv_missing_value_text", (",".join(FEATURES) + "\nNA,3.5,1.4,0.2\n").encode(), CSV),
    Case("csv_hex_float", (",".join(FEATURES) + "\n0x1p3,3.5,1.4,0.2\n").encode(), CSV),
    # -- Parquet ------------------------------------------------------------------------------------
    Case("parquet_float32", FRAME.astype("float32").to_parquet(), PARQUET),
    Case("parquet_float16", FRAME.astype("float16").to_parquet(), PARQUET),
    Case("parquet_int32", (FRAME.round() + 1).astype("int32").to_parquet(), PARQUET),
    Case("parquet_uint16", (FRAME.round() + 1).astype("uint16").to_parquet(), PARQUET),
    Case("parquet_int64_ones", (FRAME * 0 + 1).astype("int64").to_parquet(), PARQUET),
    Case("parquet_int64", (FRAME.round() + 1).astype("int64").to_parquet(), PARQUET),
    Case("parquet_uint64", (FRAME.round() + 1).astype("uint64").to_parquet(), PARQUET),
    Case("parquet_category", FRAME.astype("category").to_parquet(), PARQUET),
    Case("parquet_strings", FRAME.astype(str).to_parquet(), PARQUET),
    Case("parquet_booleans", FRAME.assign(sepal_length=True).to_parquet(), PARQUET),
    Case("parquet_missing_column", FRAME[list(FEATURES[:3])].to_parquet(), PARQUET),
    Case("parquet_index_named_as_a_feature", FRAME.set_index("sepal_length").to_parquet(), PARQUET),
    Case("parquet_null", FRAME.astype("Float64").mask(FRAME > 6).to_parquet(), PARQUET),
    Case("parquet_no_rows", FRAME.iloc[:0].to_parquet(), PARQUET),
    Case("parquet_garbage", b"PAR1garbage", PARQUET),
    Case("parquet_list_column", parquet(pa.table({name: pa.array([[1.5], [2.5]]) for name in FEATURES})), PARQUET),
    Case("parquet_row_groups", parquet(pa.Table.from_pandas(pd.concat([FRAME] * 9))), PARQUET),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_proxy_answers_as_bare_mlflow_does_or_refuses_by_its_own_documented_rules(upstream_url, proxy, case):
    bare = _post(upstream_url, case)
    ours = _post(proxy.url, case)
    if case.rule is not None:
        assert bare.status_code == 200, f"MLflow should score this case: {bare.text[:300]}"
        _assert_short_error(ours, case.rule)
    elif bare.status_code == 200:
        assert ours.status_code == 200, ours.text
        assert _numbers_close(ours.json(), bare.json())
    else:
        assert 400 <= bare.status_code < 600 and bare.status_code not in (502, 503, 504), bare.text[:300]
        _assert_short_error(ours)


def test_mlflows_scoring_server_client_works_against_the_proxy(proxy):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    address = proxy.url.removeprefix("http://")
    host, port = address.rsplit(":", 1)
    client = ScoringServerClient(host=host, port=int(port))
    client.wait_server_ready(timeout=30)
    predictions = client.invoke(FRAME).get_predictions()
    assert list(predictions["prediction"]) == ["setosa", "virginica", "versicolor"]
    with_params = client.invoke(FRAME, params={"threshold": 0.5}).get_predictions()
    assert with_params.equals(predictions)
    assert client.get_version() == importlib.metadata.version("mlflow")


def test_ignored_params_fields_and_columns_are_counted_by_kind(proxy):
    before = _ignored(proxy)
    assert proxy.post("/invocations", json={"dataframe_split": SPLIT, "params": {"p": 1}, "trace": "t"}).ok
    assert proxy.post("/invocations", data=FRAME.to_csv().encode(), headers={"Content-Type": CSV}).ok
    after = _ignored(proxy)
    assert {kind: after[kind] - before[kind] for kind in after} == {"params": 1, "field": 1, "column": 1}


def _ignored(proxy) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    families = {family.name: family for family in text_string_to_metric_families(proxy.get("/metrics").text)}
    return {sample.labels["kind"]: sample.value for sample in families["proxy_ignored_inputs"].samples}


def _post(url: str, case: Case) -> requests.Response:
    headers = {} if case.content_type is None else {"Content-Type": case.content_type}
    return requests.post(url + "/invocations", data=case.data(), headers=headers, timeout=60)


def _assert_short_error(response: requests.Response, error_code: str | None = None) -> None:
    assert 400 <= response.status_code < 500, response.text[:300]
    body = response.json()
    assert set(body) == ERROR_KEYS and (error_code is None or body["error_code"] == error_code), body
    assert len(response.content) < 2000 and not any(leak in response.text for leak in LEAKS)


def _numbers_close(ours, bare) -> bool:
    """Equal, numbers within 1e-9: MLflow scores a lone row with another BLAS kernel than several."""
    if isinstance(bare, dict):
        return (
            isinstance(ours, dict)
            and ours.keys() == bare.keys()
            and all(_numbers_close(ours[k], bare[k]) for k in bare)
        )
    if isinstance(bare, list):
        return isinstance(ours, list) and len(ours) == len(bare) and all(map(_numbers_close, ours, bare))
    if isinstance(bare, float):
        return isinstance(ours, float) and ours == pytest.approx(bare, rel=1e-9, abs=1e-15)
    return ours == bare
