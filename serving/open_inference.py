"""The Open Inference Protocol (KServe V2, Triton's HTTP API): requests to feature rows, predictions to responses.

Pure functions, no I/O, tested in process; ``serving.app`` routes the endpoints here and
sends the rows through the same forwarder as ``/invocations``. What the protocol needs
from this model:

- **Metadata** (``model_metadata``) comes from the model version's MLflow signature: one
  input tensor per input column, one output tensor per output column, MLflow types as
  V2 datatypes (``double`` -> FP64, ``long`` -> INT64, ``string`` -> BYTES...); an
  ``object`` column of doubles (``confidence_scores``) is one FP64 tensor ``[-1, k]``
  whose ``parameters.classes`` give the order of its columns.
- **Inputs** (``parse_infer_request``): the four features as four tensors named after
  them, each of shape ``[n]`` or ``[n, 1]``, or one tensor ``[n, 4]`` in feature order;
  FP32, FP64 or any integer datatype; data as JSON (flat or nested) or as binary tensor
  data after the JSON header (``Inference-Header-Content-Length``, Triton's default).
  The values then meet the same rules and row limit as ``/invocations``
  (``serving.validation``).
- **Outputs** (``infer_response``): ``prediction`` (BYTES), ``prediction_index`` (INT64),
  ``confidence`` (FP64), each ``[n, 1]``, and ``confidence_scores`` (FP64 ``[n, k]``);
  ``outputs`` in the request selects among them and asks for binary data per output,
  ``parameters.binary_data_output`` for all; the request ``id`` is echoed.
- **Errors** are the protocol's ``{"error": "..."}`` (``error_body``), from the same
  ``HttpError``s as the other endpoints, never with the request's content.
"""

import array
import json
import math
import sys
from dataclasses import dataclass, field

import orjson

from iris_core.schema import CLASSES, FEATURES, OUTPUT_COLUMNS
from serving.errors import HttpError, shorten
from serving.validation import Limits, ValidationError, check_count, checked_row, finish

INFERENCE_HEADER = "Inference-Header-Content-Length"
SERVER_NAME = "iris-mlops"
EXTENSIONS = ["binary_tensor_data"]
BINARY_TYPE = "application/octet-stream"

# MLflow's column types and their V2 datatypes.
_DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
# Input datatypes that carry numbers: the array typecode of each, as binary data.
_NUMERIC = {
    "FP32": "f",
    "FP64": "d",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
}
_INTEGERS = frozenset(name for name in _NUMERIC if "INT" in name)
_ONE_TENSOR_SHAPE = len(FEATURES)
_MAX_INPUTS = 16


@dataclass(frozen=True)
class Signature:
    """What the metadata and the responses need from a model version's MLflow signature."""

    inputs: tuple[tuple[str, str], ...]  # (name, MLflow type)
    outputs: tuple[tuple[str, str], ...]
    classes: tuple[str, ...]  # the columns of the class-probabilities output, in order
    scores_output: str | None  # the name of that output

    @classmethod
    def from_mlflow(cls, signature: dict | None) -> "Signature":
        """From ``ModelSignature.to_dict()`` (JSON strings of column specs); the project's schema when unknown."""
        if not signature:
            return DEFAULT_SIGNATURE
        inputs = [(spec["name"], spec["type"]) for spec in json.loads(signature["inputs"])]
        outputs, classes, scores = [], CLASSES, None
        for spec in json.loads(signature.get("outputs") or "[]"):
            outputs.append((spec["name"], spec["type"]))
            if spec["type"] == "object" and spec.get("properties"):
                classes, scores = tuple(spec["properties"]), spec["name"]
        return cls(tuple(inputs), tuple(outputs), tuple(classes), scores)


DEFAULT_SIGNATURE = Signature(
    inputs=tuple((name, "double") for name in FEATURES),
    outputs=(
        ("prediction", "string"),
        ("prediction_index", "long"),
        ("confidence", "double"),
        ("confidence_scores", "object"),
    ),
    classes=CLASSES,
    scores_output="confidence_scores",
)


@dataclass(frozen=True)
class Requested:
    """One output the client asked for, and whether as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    rows: list[list[float]]
    outputs: tuple[Requested, ...]
    id: str | None = None
    ignored: frozenset = field(default_factory=frozenset)


# -- metadata -------------------------------------------------------------------------------


def server_metadata(version: str) -> dict:
    return {"name": SERVER_NAME, "version": version, "extensions": EXTENSIONS}


def model_metadata(name: str, versions: list[str], signature: Signature) -> dict:
    """``GET /v2/models/{name}[/versions/{v}]``: the tensors, from the MLflow signature."""
    outputs = []
    for column, kind in signature.outputs:
        if column == signature.scores_output:
            tensor = {"name": column, "datatype": "FP64", "shape": [-1, len(signature.classes)]}
            outputs.append({**tensor, "parameters": {"classes": list(signature.classes)}})
        else:
            outputs.append({"name": column, "datatype": _DATATYPES.get(kind, "BYTES"), "shape": [-1, 1]})
    return {
        "name": name,
        "versions": versions,
        "platform": "mlflow",
        "inputs": [
            {"name": n, "datatype": _DATATYPES.get(kind, "BYTES"), "shape": [-1, 1]} for n, kind in signature.inputs
        ],
        "outputs": outputs,
    }


# -- requests -------------------------------------------------------------------------------


def parse_infer_request(body: bytes, header_length: str | None, limits: Limits) -> InferRequest:
    """The rows (FEATURES order) and requested outputs of a ``POST .../infer`` body, or a ValidationError."""
    document, binary = _split_body(body, header_length)
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise _invalid('the request must be a JSON object with a non-empty "inputs" list')
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _invalid('"id" must be a string')
    parameters = _parameters(document, "the request")
    tensors, offset = [], 0
    if len(document["inputs"]) > _MAX_INPUTS:
        raise _invalid(f"at most {_MAX_INPUTS} inputs, got {len(document['inputs'])}")
    for number, tensor in enumerate(document["inputs"]):
        name, shape, values, offset = _input(tensor, number, binary, offset, limits)
        tensors.append((name, shape, values))
    if offset != len(binary):
        raise _invalid(f"{len(binary) - offset} bytes of binary data follow the inputs that no input claims")
    rows = _rows(tensors, limits)
    outputs = _requested(document, bool(parameters.get("binary_data_output")))
    return InferRequest(rows, outputs, request_id)


def _split_body(body: bytes, header_length: str | None) -> tuple[object, bytes]:
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise _invalid(f"{INFERENCE_HEADER} must be a number of bytes") from None
        if not 0 < size <= len(body):
            raise _invalid(f"{INFERENCE_HEADER} is {size}, the body has {len(body)} bytes")
        header, binary = body[:size], body[size:]
    try:
        return orjson.loads(header), binary
    except orjson.JSONDecodeError as exc:
        raise ValidationError(400, "MALFORMED_REQUEST", "the request header is not valid JSON", [exc.msg]) from None


def _parameters(holder: dict, where: str) -> dict:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _invalid(f'"parameters" of {where} must be an object')
    return parameters


def _input(tensor, number: int, binary: bytes, offset: int, limits: Limits) -> tuple[str, list[int], list, int]:
    """One input tensor: its name, shape and flat values (numbers, still to be checked), and the new offset."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise _invalid(f"inputs[{number}] must be an object with a name, shape, datatype and data")
    name = tensor["name"]
    where = f"input {shorten(name, 40)!r}"
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise _invalid(f"{where}: shape must be a list of sizes")
    if len(shape) > 2 or math.prod(shape) > limits.max_rows * len(FEATURES):
        check_count(shape[0], limits)
        raise _invalid(f"{where}: shape {shape[:4]} is neither [n], [n, 1] nor [n, {_ONE_TENSOR_SHAPE}]")
    if datatype not in _NUMERIC:
        raise _invalid(f"{where}: datatype {shorten(str(datatype), 20)!r} is not one of {', '.join(_NUMERIC)}")
    count = math.prod(shape)
    size = _parameters(tensor, where).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise _invalid(f"{where} has both data and binary_data_size")
        if type(size) is not int or size != count * array.array(_NUMERIC[datatype]).itemsize:
            raise _invalid(f"{where}: binary_data_size must be {count} x the size of {datatype}")
        if offset + size > len(binary):
            raise _invalid(f"{where}: the binary data ends before its {size} bytes")
        values = _from_binary(binary[offset : offset + size], datatype)
        return name, shape, values, offset + size
    if "data" not in tensor:
        raise _invalid(f"{where} has neither data nor binary_data_size")
    values = _flatten(tensor["data"], where, count)
    if len(values) != count:
        raise _invalid(f"{where}: {len(values)} values for shape {shape}")
    if datatype in _INTEGERS and any(type(v) is float and not v.is_integer() for v in values):
        raise _invalid(f"{where}: an integer datatype holds a number with a fraction")
    return name, shape, values, offset


def _flatten(data, where: str, limit: int) -> list:
    """Row-major values of flat or nested JSON data; nothing is flattened past the size the shape allows."""
    if not isinstance(data, list):
        raise _invalid(f"{where}: data must be a list")
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 8:
                    raise _invalid(f"{where}: data is nested too deeply")
                stack.append(iter(item))
                break
            flat.append(item)
            if len(flat) > limit:
                return flat
        else:
            stack.pop()
    return flat


def _from_binary(raw: bytes, datatype: str) -> list:
    values = array.array(_NUMERIC[datatype])
    values.frombytes(raw)
    if sys.byteorder != "little":  # the extension's data is little-endian
        values.byteswap()
    return values.tolist()


def _rows(tensors: list[tuple[str, list[int], list]], limits: Limits) -> list[list[float]]:
    """The rows from four feature tensors or one ``[n, 4]`` tensor; the values meet the proxy's rules."""
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] == _ONE_TENSOR_SHAPE:
        _name, shape, values = tensors[0]
        check_count(shape[0], limits)
        columns = [values[i :: len(FEATURES)] for i in range(len(FEATURES))]
    else:
        by_name = {}
        for name, shape, values in tensors:
            if name not in FEATURES:
                raise _invalid(
                    f"unknown input {shorten(name, 40)!r}; the inputs are {', '.join(FEATURES)} (or one [n, 4])"
                )
            if name in by_name:
                raise _invalid(f"input {name!r} is given twice")
            if len(shape) == 2 and shape[1] != 1:
                raise _invalid(f"input {name!r}: shape must be [n] or [n, 1], got {shape}")
            by_name[name] = (shape[0], values)
        missing = [name for name in FEATURES if name not in by_name]
        if missing:
            raise _invalid(f"missing input {missing[0]}; the inputs are {', '.join(FEATURES)} (or one [n, 4])")
        counts = {count for count, _ in by_name.values()}
        if len(counts) != 1:
            raise _invalid("the four inputs must have the same number of rows")
        check_count(counts.pop(), limits)
        columns = [by_name[name][1] for name in FEATURES]
    errors: list[str] = []
    rows = [checked_row(list(values), number, errors) for number, values in enumerate(zip(*columns))]
    return finish(rows, errors)


def _requested(document: dict, binary_default: bool) -> tuple[Requested, ...]:
    outputs = document.get("outputs")
    if outputs is None:
        return tuple(Requested(name, binary_default) for name in OUTPUT_COLUMNS)
    if not isinstance(outputs, list) or len(outputs) > len(OUTPUT_COLUMNS) * 2:
        raise _invalid('"outputs" must be a list of the outputs wanted')
    chosen = []
    for number, output in enumerate(outputs):
        if not isinstance(output, dict) or output.get("name") not in OUTPUT_COLUMNS:
            raise _invalid(f"outputs[{number}] must name one of {', '.join(OUTPUT_COLUMNS)}")
        binary = _parameters(output, f"output {output['name']!r}").get("binary_data", binary_default)
        chosen.append(Requested(output["name"], bool(binary)))
    return tuple(chosen)


# -- responses ------------------------------------------------------------------------------


def infer_response(
    model_name: str, version: str, request: InferRequest, predictions: list[dict], classes: tuple[str, ...]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON header."""
    count = len(predictions)
    outputs, chunks = [], []
    for wanted in request.outputs:
        datatype, shape, values = _output(wanted.name, predictions, classes, count)
        tensor = {"name": wanted.name, "datatype": datatype, "shape": shape}
        if wanted.binary:
            raw = _to_binary(values, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values
        outputs.append(tensor)
    document = {"model_name": model_name, "model_version": version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = outputs
    header = orjson.dumps(document)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _output(name: str, predictions: list[dict], classes: tuple[str, ...], count: int) -> tuple[str, list[int], list]:
    if name == "confidence_scores":
        values = [record["confidence_scores"][cls] for record in predictions for cls in classes]
        return "FP64", [count, len(classes)], values
    values = [record[name] for record in predictions]
    datatype = {"prediction": "BYTES", "prediction_index": "INT64", "confidence": "FP64"}[name]
    return datatype, [count, 1], values


def _to_binary(values: list, datatype: str) -> bytes:
    if datatype == "BYTES":  # each element: its length as a little-endian uint32, then its bytes
        encoded = [str(value).encode() for value in values]
        return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)
    packed = array.array(_NUMERIC[datatype], values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def error_body(exc: HttpError) -> bytes:
    """The protocol's error: one string, the message and its specifics, never the request's content."""
    if not exc.details:
        return orjson.dumps({"error": exc.message})
    head = exc.message.removesuffix(f" ({exc.details[0]})")  # the message's own copy of the first detail
    return orjson.dumps({"error": f"{head}: {'; '.join(exc.details)}"})


def _invalid(message: str) -> ValidationError:
    return ValidationError(400, "INVALID_FORMAT", message)
