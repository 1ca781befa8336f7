"""The Open Inference Protocol's translation as pure functions: metadata, every input form, outputs, errors."""

import json
import struct
from dataclasses import replace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_core.table.contract import from_signature
from iris_core.table.iris import IRIS
from serving.errors import HttpError
from serving.protocols.open_inference import (
    InferRequest,
    Requested,
    Signature,
    error_body,
    infer_response,
    model_metadata,
    parse_infer_request,
)
from serving.protocols.rows import RowReader
from serving.protocols.scoring import Limits, ValidationError
from serving.registry.model_facts import standing_in
from tests.helpers.iris import CLASSES, FEATURES
from tests.helpers.json_documents import any_json
from tests.helpers.open_inference import PREDICTIONS, ROWS, SIGNATURE, feature_inputs

LIMITS = Limits(max_rows=10)
READER = RowReader(IRIS)
OUTPUTS = SIGNATURE.output_names


def parse(document: dict, limits=LIMITS) -> InferRequest:
    return parse_infer_request(orjson.dumps(document), None, limits, READER, OUTPUTS)


def refusal(document, header_length=None, limits=LIMITS) -> ValidationError:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    with pytest.raises(ValidationError) as caught:
        parse_infer_request(body, header_length, limits, READER, OUTPUTS)
    return caught.value


def binary_request(rows=ROWS, outputs=None, parameters=None) -> tuple[bytes, str]:
    """What Triton's client sends by default: a JSON header, then each input's bytes."""
    inputs, blobs = [], []
    for i, name in enumerate(FEATURES):
        blob = struct.pack(f"<{len(rows)}f", *[row[i] for row in rows])
        inputs.append(
            {"name": name, "shape": [len(rows), 1], "datatype": "FP32", "parameters": {"binary_data_size": len(blob)}}
        )
        blobs.append(blob)
    document = {"inputs": inputs, **({"outputs": outputs} if outputs else {}), **({"parameters": parameters} or {})}
    header = orjson.dumps({k: v for k, v in document.items() if v is not None})
    return header + b"".join(blobs), str(len(header))


# -- metadata --------------------------------------------------------------------------------


def test_metadata_names_each_input_and_output_with_its_datatype_and_shape_from_the_signature():
    metadata = model_metadata("iris", ["2", "1"], SIGNATURE)
    assert metadata["name"] == "iris" and metadata["versions"] == ["2", "1"]
    assert metadata["inputs"] == [{"name": name, "datatype": "FP64", "shape": [-1, 1]} for name in FEATURES]
    assert metadata["outputs"] == [
        {"name": "prediction", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "prediction_index", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "confidence", "datatype": "FP64", "shape": [-1, 1]},
        {"name": "confidence_scores", "datatype": "FP64", "shape": [-1, 3], "parameters": {"classes": list(CLASSES)}},
    ]


def test_the_metadata_follows_the_signature_it_is_given():
    other = {
        "inputs": json.dumps([{"type": "float", "name": "width"}, {"type": "long", "name": "count"}]),
        "outputs": json.dumps(
            [{"type": "object", "name": "scores", "properties": {"b": {"type": "double"}, "a": {"type": "double"}}}]
        ),
    }
    metadata = model_metadata("m", ["7"], Signature.of(from_signature(other), other))
    assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [("width", "FP32"), ("count", "INT64")]
    assert metadata["outputs"][0]["parameters"] == {"classes": ["b", "a"]} and metadata["outputs"][0]["shape"] == [
        -1,
        2,
    ]


def test_without_a_registry_the_stand_in_iris_model_gives_the_same_metadata():
    assert model_metadata("iris", ["1"], standing_in().signature) == model_metadata("iris", ["1"], SIGNATURE)


def test_a_plain_models_tensor_output_is_one_predictions_output_of_its_datatype():
    plain = {
        "inputs": json.dumps([{"type": "double", "name": "sepal length (cm)"}, {"type": "double", "name": "x/y"}]),
        "outputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]),
    }
    signature = Signature.of(from_signature(plain), plain)
    metadata = model_metadata("plain", ["1"], signature)
    assert metadata["inputs"] == [
        {"name": "sepal length (cm)", "datatype": "FP64", "shape": [-1, 1]},
        {"name": "x/y", "datatype": "FP64", "shape": [-1, 1]},
    ]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1, 1]}]
    request = parse_infer_request(
        orjson.dumps({"inputs": [{"name": "in", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
        None,
        LIMITS,
        RowReader(from_signature(plain)),
        signature.output_names,
    )
    assert request.rows == [[1.0, 2.0], [3.0, 4.0]]
    body, _ = infer_response("plain", "1", request, [0, 2], signature)
    assert orjson.loads(body)["outputs"] == [
        {"name": "predictions", "datatype": "INT64", "shape": [2, 1], "data": [0, 2]}
    ]


# -- inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs",
    [
        feature_inputs(),
        feature_inputs(shape_of=lambda n: [n]),
        list(reversed(feature_inputs())),
        feature_inputs(datatype="FP32"),
        [{"name": "features", "shape": [2, 4], "datatype": "FP64", "data": [v for row in ROWS for v in row]}],
        [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS}],
        [{**tensor, "data": [[v] for v in tensor["data"]]} for tensor in feature_inputs()],
    ],
    ids=["four-n-1", "four-n", "any-order", "fp32-json", "one-n-4-flat", "one-n-4-nested", "nested-data"],
)
def test_every_input_form_gives_the_rows_in_feature_order(inputs):
    assert parse({"inputs": inputs}).rows == ROWS


@pytest.mark.parametrize("datatype", ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"])
def test_integer_datatypes_are_read_as_numbers(datatype):
    rows = [[5, 3, 1, 1]]
    assert parse({"inputs": feature_inputs(rows, datatype)}).rows == [[5.0, 3.0, 1.0, 1.0]]


def test_binary_tensor_data_after_the_json_header_is_read_as_triton_sends_it():
    body, header_length = binary_request()
    parsed = parse_infer_request(body, header_length, LIMITS, READER, OUTPUTS)
    assert parsed.rows == [[pytest.approx(v, rel=1e-7) for v in row] for row in ROWS]


def test_binary_data_of_every_numeric_datatype_is_little_endian():
    blob = struct.pack("<2q", 5, 6)
    inputs = [
        {"name": name, "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": len(blob)}}
        for name in FEATURES
    ]
    header = orjson.dumps({"inputs": inputs})
    assert parse_infer_request(header + blob * 4, str(len(header)), LIMITS, READER, OUTPUTS).rows == [
        [5.0] * 4,
        [6.0] * 4,
    ]


def test_the_request_id_is_kept_and_outputs_default_to_all_as_json_or_binary_when_asked():
    assert parse({"id": "r-1", "inputs": feature_inputs()}).id == "r-1"
    assert parse({"inputs": feature_inputs()}).outputs == tuple(
        Requested(name, False) for name in ("prediction", "prediction_index", "confidence", "confidence_scores")
    )
    everything = parse({"inputs": feature_inputs(), "parameters": {"binary_data_output": True}})
    assert all(wanted.binary for wanted in everything.outputs)
    chosen = parse(
        {
            "inputs": feature_inputs(),
            "outputs": [{"name": "confidence"}, {"name": "prediction", "parameters": {"binary_data": True}}],
        }
    )
    assert chosen.outputs == (Requested("confidence", False), Requested("prediction", True))


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"inputs": []}, "non-empty"),
        ([1, 2], "JSON object"),
        ({"inputs": feature_inputs()[:3]}, "missing input petal_width"),
        ({"inputs": [*feature_inputs(), {**feature_inputs()[0], "name": "colour"}]}, "inputs[4] names no feature"),
        ({"inputs": [*feature_inputs(), feature_inputs()[0]]}, "given twice"),
        ({"inputs": feature_inputs(datatype="BYTES")}, "datatype 'BYTES'"),
        ({"inputs": feature_inputs(datatype="BOOL")}, "datatype 'BOOL'"),
        ({"inputs": [{**t, "shape": [3, 1]} for t in feature_inputs()]}, "2 values for shape [3, 1]"),
        ({"inputs": [{**t, "shape": [1, 2]} for t in feature_inputs()]}, "[n] or [n, 1]"),
        ({"inputs": [{**t, "shape": [1, 1, 2]} for t in feature_inputs()]}, "neither"),
        ({"inputs": [{**t, "shape": "2"} for t in feature_inputs()]}, "shape must be"),
        ({"inputs": [{k: v for k, v in t.items() if k != "data"} for t in feature_inputs()]}, "neither data nor"),
        ({"inputs": [{**t, "data": 5.1} for t in feature_inputs()]}, "data must be a list"),
        ({"inputs": feature_inputs([[5.5, 3, 1, 1]], "INT32")}, "fraction"),
        (
            {"inputs": [*feature_inputs()[:3], {**feature_inputs()[3], "shape": [1], "data": [0.2]}]},
            "same number of rows",
        ),
        ({"id": 7, "inputs": feature_inputs()}, '"id" must be a string'),
        ({"inputs": feature_inputs(), "outputs": [{"name": "colour"}]}, "outputs[0] must name"),
        ({"inputs": feature_inputs(), "parameters": []}, "must be an object"),
    ],
)
def test_requests_that_are_not_the_protocol_or_not_this_model_are_refused_with_a_reason(document, words):
    error = refusal(document)
    assert error.status == 400 and words in error.message


def test_values_meet_the_same_rules_as_invocations_naming_row_and_column():
    rows = [[5.1, 3.5, 1.4, 0.2], [-1.0, 2e6, 1.4, 0.2]]
    error = refusal({"inputs": feature_inputs(rows)})
    assert (error.status, error.error_code) == (400, "INVALID_VALUE")
    assert error.details == [
        "row 1, column sepal_length: must be > 0 and <= 1e+06, got -1",
        "row 1, column sepal_width: must be > 0 and <= 1e+06, got 2e+06",
    ]
    for bad in ("5.1", True, None):
        assert refusal({"inputs": feature_inputs([[bad, 3.5, 1.4, 0.2]])}).error_code == "INVALID_VALUE"
    nan = struct.pack("<f", float("nan"))
    inputs = [{"name": n, "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}} for n in FEATURES]
    header = orjson.dumps({"inputs": inputs})
    assert refusal(header + nan * 4, str(len(header))).details[0] == "row 0, column sepal_length: must be finite"


def test_more_rows_than_the_limit_are_refused_with_413():
    error = refusal({"inputs": feature_inputs(ROWS * 6)}, limits=Limits(max_rows=11))
    assert (error.status, error.error_code) == (413, "TOO_MANY_ROWS")
    huge = [{**t, "shape": [10**12, 1], "data": []} for t in feature_inputs()]
    assert refusal({"inputs": huge}).status == 413


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda body, n: (body, "abc"), "must be a number of bytes"),
        (lambda body, n: (body, str(len(body) + 1)), "the body has"),
        (lambda body, n: (body[:-3], n), "ends before"),
        (lambda body, n: (body + b"xx", n), "no input claims"),
        (lambda body, n: (body, str(int(n) - 1)), "not valid JSON"),
    ],
    ids=["header-not-a-number", "header-longer-than-body", "binary-cut-short", "binary-left-over", "header-cut"],
)
def test_binary_framing_that_does_not_add_up_is_refused(mangle, words):
    body, header_length = binary_request()
    body, header_length = mangle(body, header_length)
    error = refusal(body, header_length)
    assert error.status == 400 and words in error.message


def test_a_binary_size_that_does_not_match_the_shape_and_datatype_is_refused():
    inputs = [{"name": n, "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}} for n in FEATURES]
    header = orjson.dumps({"inputs": inputs})
    assert "binary_data_size must be 2 x" in refusal(header + b"\0" * 16, str(len(header))).message


# -- outputs ---------------------------------------------------------------------------------


def test_the_response_has_every_output_as_json_with_the_request_id_and_the_version():
    request = InferRequest(
        ROWS,
        tuple(Requested(n, False) for n in ("prediction", "prediction_index", "confidence", "confidence_scores")),
        "r-1",
    )
    body, header_length = infer_response("iris", "2", request, PREDICTIONS, SIGNATURE)
    assert header_length is None
    assert orjson.loads(body) == {
        "model_name": "iris",
        "model_version": "2",
        "id": "r-1",
        "outputs": [
            {"name": "prediction", "datatype": "BYTES", "shape": [2, 1], "data": ["setosa", "virginica"]},
            {"name": "prediction_index", "datatype": "INT64", "shape": [2, 1], "data": [0, 2]},
            {"name": "confidence", "datatype": "FP64", "shape": [2, 1], "data": [0.9, 0.8]},
            {
                "name": "confidence_scores",
                "datatype": "FP64",
                "shape": [2, 3],
                "data": [0.9, 0.07, 0.03, 0.01, 0.19, 0.8],
            },
        ],
    }


def test_binary_outputs_follow_the_json_header_in_the_extensions_encoding():
    request = InferRequest(
        ROWS, (Requested("prediction", True), Requested("confidence_scores", True), Requested("confidence", False))
    )
    body, header_length = infer_response("iris", "2", request, PREDICTIONS, SIGNATURE)
    header = orjson.loads(body[:header_length])
    assert "id" not in header
    names = [b"setosa", b"virginica"]
    strings = b"".join(len(n).to_bytes(4, "little") + n for n in names)
    scores = struct.pack("<6d", 0.9, 0.07, 0.03, 0.01, 0.19, 0.8)
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"][:2]] == [len(strings), len(scores)]
    assert header["outputs"][2]["data"] == [0.9, 0.8]
    assert body[header_length:] == strings + scores


def test_the_class_probabilities_follow_the_class_order_of_the_metadata():
    request = InferRequest(ROWS, (Requested("confidence_scores", False),))
    body, _ = infer_response(
        "iris", "2", request, PREDICTIONS, replace(SIGNATURE, classes=("virginica", "setosa", "versicolor"))
    )
    assert orjson.loads(body)["outputs"][0]["data"] == [0.03, 0.9, 0.07, 0.8, 0.01, 0.19]


def test_errors_are_the_protocols_one_string_with_the_specifics():
    details = ["row 0, column sepal_length: must be finite", "row 1, column petal_width: must be finite"]
    error = HttpError(400, "INVALID_VALUE", f"invalid feature values ({details[0]})", details)
    assert orjson.loads(error_body(error)) == {"error": "invalid feature values: " + "; ".join(details)}
    assert orjson.loads(error_body(HttpError(404, "NOT_FOUND", "unknown model"))) == {"error": "unknown model"}


json_values = any_json(
    ["inputs", "outputs", "id", "parameters", "name", "shape", "datatype", "data", "binary_data_size", *FEATURES]
)


@settings(max_examples=200, deadline=None)
@given(document=json_values, tail=st.binary(max_size=64), header_length=st.none() | st.integers(-5, 400).map(str))
def test_any_body_gives_rows_or_a_client_error(document, tail, header_length):
    body = json.dumps(document).encode() + tail
    try:
        parsed = parse_infer_request(body, header_length, LIMITS, READER, OUTPUTS)
    except ValidationError as error:
        assert 400 <= error.status < 500 and error.message
    else:
        assert parsed.rows and all(len(row) == 4 and all(0 < v <= 1e6 for v in row) for row in parsed.rows)
