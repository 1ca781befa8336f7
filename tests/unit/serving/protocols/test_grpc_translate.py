"""The gRPC messages to rows and answers to messages, as pure functions: the REST protocol's rules, gRPC's framing."""

import struct

import grpc
import pytest

from iris_core.table.iris import IRIS
from serving.errors import HttpError
from serving.protocols.grpc import messages
from serving.protocols.grpc.translate import infer_request, infer_response, model_metadata, status_of
from serving.protocols.rows import Limits, RowReader, ValidationError
from tests.helpers.open_inference import PREDICTIONS, SIGNATURE

LIMITS = Limits(max_rows=10)
READER = RowReader(IRIS)
OUTPUTS = SIGNATURE.output_names
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def request(rows=ROWS, raw=False, datatype="FP64", **fields):
    message = messages.ModelInferRequest(model_name="iris", **fields)
    for i, name in enumerate(IRIS.feature_names):
        tensor = message.inputs.add(name=name, datatype=datatype, shape=[len(rows), 1])
        values = [row[i] for row in rows]
        if raw:
            message.raw_input_contents.append(
                struct.pack(f"<{len(values)}{'d' if datatype == 'FP64' else 'f'}", *values)
            )
        else:
            getattr(tensor.contents, "fp64_contents" if datatype == "FP64" else "fp32_contents").extend(values)
    return message


def refusal(message, limits=LIMITS) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        infer_request(message, limits, READER, OUTPUTS)
    return caught.value


@pytest.mark.parametrize("raw", [False, True])
def test_typed_contents_and_raw_contents_give_the_same_rows_in_feature_order(raw):
    parsed = infer_request(request(raw=raw, id="r-1"), LIMITS, READER, OUTPUTS)
    assert parsed.rows == ROWS and parsed.id == "r-1"
    assert [wanted.name for wanted in parsed.outputs] == list(OUTPUTS)


def test_one_n_by_k_tensor_in_feature_order_is_read_as_rows():
    message = messages.ModelInferRequest(model_name="iris")
    tensor = message.inputs.add(name="input-0", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend([1.5] * 8)
    assert infer_request(message, LIMITS, READER, OUTPUTS).rows == [[1.5] * 4] * 2


@pytest.mark.parametrize(
    "mangle, words",
    [
        (lambda m: m.ClearField("inputs"), "no inputs"),
        (lambda m: m.inputs[0].ClearField("shape"), "shape must be"),
        (lambda m: setattr(m.inputs[0], "datatype", "BYTES"), "datatype 'BYTES'"),
        (lambda m: m.inputs[1].contents.fp64_contents.append(1.0), "3 values for shape [2, 1]"),
        (lambda m: setattr(m.inputs[0], "name", "colour"), "inputs[0] names no feature"),
        (lambda m: m.raw_input_contents.append(b"x"), "raw_input_contents for 4 inputs"),
        (lambda m: m.outputs.add(name="colour"), "outputs[0] must name one of"),
        (lambda m: m.inputs[3].contents.fp64_contents.__setitem__(0, -1.0), "must be > 0 and <= 1e+06, got -1"),
    ],
)
def test_messages_that_break_a_rule_are_refused_with_a_reason_and_invalid_argument(mangle, words):
    message = request()
    mangle(message)
    error = refusal(message)
    assert words in str(error.message) + " ".join(error.details)
    assert status_of(error) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_raw_buffer_of_the_wrong_size_and_too_many_rows_are_refused():
    message = request(raw=True)
    message.raw_input_contents[0] = message.raw_input_contents[0][:-1]
    assert "must be 2 x the size of FP64, 16 bytes" in refusal(message).message
    too_many = refusal(request(rows=ROWS * 6))
    assert too_many.status == 413 and status_of(too_many) == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "status, code",
    [(401, "UNAUTHENTICATED"), (404, "NOT_FOUND"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED"), (500, "INTERNAL")],
)
def test_every_http_refusal_has_its_grpc_status(status, code):
    assert status_of(HttpError(status, "X", "m")) == getattr(grpc.StatusCode, code)


def test_the_response_carries_every_output_as_raw_little_endian_bytes_with_the_version_and_id():
    parsed = infer_request(request(id="r-9"), LIMITS, READER, OUTPUTS)
    response = infer_response("iris", "2", parsed, PREDICTIONS, SIGNATURE)
    assert (response.model_name, response.model_version, response.id) == ("iris", "2", "r-9")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("prediction", "BYTES", [2, 1]),
        ("prediction_index", "INT64", [2, 1]),
        ("confidence", "FP64", [2, 1]),
        ("confidence_scores", "FP64", [2, 3]),
    ]
    assert response.raw_output_contents[1] == struct.pack("<2q", 0, 2)
    assert response.raw_output_contents[0] == struct.pack("<I", 6) + b"setosa" + struct.pack("<I", 9) + b"virginica"


def test_the_metadata_message_holds_the_rest_metadatas_tensors():
    metadata = model_metadata("iris", ["2", "1"], SIGNATURE)
    assert list(metadata.versions) == ["2", "1"] and metadata.platform == "mlflow"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (name, "FP64", [-1, 1]) for name in IRIS.feature_names
    ]
    assert [t.name for t in metadata.outputs] == list(OUTPUTS)
