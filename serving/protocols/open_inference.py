"""The Open Inference Protocol (KServe V2, Triton's HTTP API): requests to feature rows, predictions to responses.

Pure functions, no I/O, tested in process; ``serving.app`` routes the endpoints here and
sends the rows through the same forwarder as ``/invocations``. What the protocol needs
from a model version, all read from that version (its contract and MLflow signature: ``Signature``):

- **Metadata** (``model_metadata``): one input tensor per feature of the version's table
  contract, one output tensor per output column of its MLflow signature, MLflow types as
  V2 datatypes (``double`` -> FP64, ``long`` -> INT64, ``string`` -> BYTES...); an
  ``object`` column of doubles (``confidence_scores``) is one FP64 tensor ``[-1, k]``
  whose ``parameters.classes`` give the order of its columns. A model whose signature
  declares a tensor output (any MLflow classifier logged with an inferred signature) has
  one output, ``predictions``, of the tensor's datatype.
- **Inputs** (``parse_infer_request``): the features as tensors named after them, each of
  shape ``[n]`` or ``[n, 1]``, or one tensor ``[n, k]`` in feature order; FP32, FP64 or
  any integer datatype; data as JSON (flat or nested) or as binary tensor data after the
  JSON header (``Inference-Header-Content-Length``, Triton's default). The values then
  meet the same rules and row limit as ``/invocations`` (``serving.protocols.rows``).
- **Outputs** (``infer_response``): the signature's outputs, each ``[n, 1]`` (for this
  project's model ``prediction`` (BYTES), ``prediction_index`` (INT64), ``confidence``
  (FP64), and ``confidence_scores`` (FP64 ``[n, k]``)); ``outputs`` in the request selects
  among them and asks for binary data per output, ``parameters.binary_data_output`` for
  all; the request ``id`` is echoed.
- **Errors** are the protocol's ``{"error": "..."}`` (``error_body``), from the same
  ``HttpError``s as the other endpoints, never with the request's content.
"""

import array
import json
import math
import sys
from dataclasses import dataclass, field

import orjson

from iris_core.table.contract import TableContract
from serving.errors import HttpError, shorten
from serving.protocols.rows import Limits, RowReader, ValidationError, check_count, finish

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
NUMERIC = {
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
INTEGERS = frozenset(name for name in NUMERIC if "INT" in name)
# numpy dtypes of an MLflow tensor spec, as V2 datatypes
_TENSOR_DATATYPES = {
    "float64": "FP64",
    "float32": "FP32",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}
PREDICTIONS = "predictions"  # the one output of a model that answers a bare value per row
_MAX_INPUTS = 16


@dataclass(frozen=True)
class Signature:
    """What the metadata and the responses need from a model version: its contract's inputs, its signature's outputs."""

    inputs: tuple[tuple[str, str], ...]  # (name, MLflow type), the contract's features
    outputs: tuple[tuple[str, str], ...]  # (name, V2 datatype)
    classes: tuple[str, ...]  # the columns of the class-probabilities output, in order
    scores_output: str | None  # the name of that output

    @classmethod
    def of(cls, contract: TableContract, signature: dict | None) -> "Signature":
        """From the version's contract and its ``ModelSignature.to_dict()`` (JSON strings of column specs)."""
        outputs, classes, scores = [], contract.classes, None
        try:
            specs = json.loads((signature or {}).get("outputs") or "[]")
        except ValueError:
            specs = []
        for spec in specs if isinstance(specs, list) else []:
            if not isinstance(spec, dict):
                continue
            if spec.get("type") == "tensor":
                dtype = (spec.get("tensor-spec") or {}).get("dtype", "")
                outputs.append((spec.get("name") or PREDICTIONS, _TENSOR_DATATYPES.get(str(dtype), "BYTES")))
                continue
            name = spec.get("name") or PREDICTIONS
            if spec.get("type") == "object" and spec.get("properties"):
                classes, scores = tuple(str(key) for key in spec["properties"]), name
                outputs.append((name, "FP64"))
            else:
                outputs.append((name, _DATATYPES.get(spec.get("type"), "BYTES")))
        if not outputs:
            outputs = [(PREDICTIONS, "BYTES")]
        return cls(contract.layout, tuple(outputs), tuple(classes), scores)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.outputs)


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
    for column, datatype in signature.outputs:
        if column == signature.scores_output:
            tensor = {"name": column, "datatype": "FP64", "shape": [-1, len(signature.classes)]}
            outputs.append({**tensor, "parameters": {"classes": list(signature.classes)}})
        else:
            outputs.append({"name": column, "datatype": datatype, "shape": [-1, 1]})
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


def parse_infer_request(
    body: bytes, header_length: str | None, limits: Limits, reader: RowReader, outputs: tuple[str, ...]
) -> InferRequest:
    """The rows (in the contract's order) and requested outputs (among ``outputs``) of a ``POST .../infer`` body."""
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
        name, shape, values, offset = _input(tensor, number, binary, offset, limits, reader.width)
        tensors.append((name, shape, values))
    if offset != len(binary):
        raise _invalid(f"{len(binary) - offset} bytes of binary data follow the inputs that no input claims")
    rows = tensor_rows(tensors, limits, reader)
    requested = _requested(document, bool(parameters.get("binary_data_output")), outputs)
    return InferRequest(rows, requested, request_id)


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


def _input(
    tensor, number: int, binary: bytes, offset: int, limits: Limits, width: int
) -> tuple[str, list[int], list, int]:
    """One input tensor: its name, shape and flat values (numbers, still to be checked), and the new offset."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise _invalid(f"inputs[{number}] must be an object with a name, shape, datatype and data")
    name = tensor["name"]
    where = f"inputs[{number}]"  # never the client's name: nothing from a request is echoed
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise _invalid(f"{where}: shape must be a list of sizes")
    if len(shape) > 2 or math.prod(shape) > limits.max_rows * width:
        check_count(shape[0], limits)
        raise _invalid(f"{where}: shape {shape[:4]} is neither [n], [n, 1] nor [n, {width}]")
    if datatype not in NUMERIC:
        raise _invalid(f"{where}: datatype {shorten(str(datatype), 20)!r} is not one of {', '.join(NUMERIC)}")
    count = math.prod(shape)
    size = _parameters(tensor, where).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise _invalid(f"{where} has both data and binary_data_size")
        if type(size) is not int or size != count * array.array(NUMERIC[datatype]).itemsize:
            raise _invalid(f"{where}: binary_data_size must be {count} x the size of {datatype}")
        if offset + size > len(binary):
            raise _invalid(f"{where}: the binary data ends before its {size} bytes")
        values = from_binary(binary[offset : offset + size], datatype)
        return name, shape, values, offset + size
    if "data" not in tensor:
        raise _invalid(f"{where} has neither data nor binary_data_size")
    values = _flatten(tensor["data"], where, count)
    if len(values) != count:
        raise _invalid(f"{where}: {len(values)} values for shape {shape}")
    if datatype in INTEGERS and any(type(v) is float and not v.is_integer() for v in values):
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


def from_binary(raw: bytes, datatype: str) -> list:
    values = array.array(NUMERIC[datatype])
    values.frombytes(raw)
    if sys.byteorder != "little":  # the extension's data is little-endian
        values.byteswap()
    return values.tolist()


def tensor_rows(tensors: list[tuple[str, list[int], list]], limits: Limits, reader: RowReader) -> list[list]:
    """The rows from a tensor per feature or one ``[n, k]`` tensor; the values meet the contract's rules."""
    width = reader.width
    shown = _shown(reader)
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] == width and width > 1:
        _name, shape, values = tensors[0]
        check_count(shape[0], limits)
        columns = [values[i::width] for i in range(width)]
    else:
        by_name = {}
        for number, (name, shape, values) in enumerate(tensors):
            if name not in reader.name_set:
                raise _invalid(f"inputs[{number}] names no feature; the inputs are {shown}")
            if name in by_name:
                raise _invalid(f"input {shorten(name, 40)} is given twice")
            if len(shape) == 2 and shape[1] != 1:
                raise _invalid(f"input {shorten(name, 40)}: shape must be [n] or [n, 1], got {shape}")
            by_name[name] = (shape[0], values)
        missing = [name for name in reader.names if name not in by_name]
        if missing:
            raise _invalid(f"missing input {shorten(missing[0], 40)}; the inputs are {shown}")
        counts = {count for count, _ in by_name.values()}
        if len(counts) != 1:
            raise _invalid("the inputs must have the same number of rows")
        check_count(counts.pop(), limits)
        columns = [by_name[name][1] for name in reader.names]
    errors: list[str] = []
    rows = [reader.checked_row(list(values), number, errors) for number, values in enumerate(zip(*columns))]
    return finish(rows, errors)


def _shown(reader: RowReader) -> str:
    names = ", ".join(shorten(name, 40) for name in reader.names[:8])
    more = f" and {reader.width - 8} more" if reader.width > 8 else ""
    one = f" (or one [n, {reader.width}])" if reader.width > 1 else ""
    return f"{names}{more}{one}"


def _requested(document: dict, binary_default: bool, names: tuple[str, ...]) -> tuple[Requested, ...]:
    outputs = document.get("outputs")
    if outputs is None:
        return tuple(Requested(name, binary_default) for name in names)
    if not isinstance(outputs, list) or len(outputs) > len(names) * 2:
        raise _invalid('"outputs" must be a list of the outputs wanted')
    chosen = []
    for number, output in enumerate(outputs):
        if not isinstance(output, dict) or output.get("name") not in names:
            shown = ", ".join(shorten(name, 40) for name in names)
            raise _invalid(f"outputs[{number}] must name one of {shown}")
        binary = _parameters(output, f"output {shorten(output['name'], 40)!r}").get("binary_data", binary_default)
        chosen.append(Requested(output["name"], bool(binary)))
    return tuple(chosen)


# -- responses ------------------------------------------------------------------------------


def infer_response(
    model_name: str, version: str, request: InferRequest, predictions: list, signature: Signature
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the length of its JSON header."""
    count = len(predictions)
    outputs, chunks = [], []
    datatypes = dict(signature.outputs)
    for wanted in request.outputs:
        datatype, shape, values = output_tensor(wanted.name, predictions, signature, datatypes, count)
        tensor = {"name": wanted.name, "datatype": datatype, "shape": shape}
        if wanted.binary:
            raw = to_binary(values, datatype)
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


def output_tensor(
    name: str, predictions: list, signature: Signature, datatypes: dict, count: int
) -> tuple[str, list[int], list]:
    """One output tensor: a column of the model's records, its class scores, or its bare answers.

    An answer without the output its signature declares is the model server's failure: 502.
    """
    try:
        return _output_tensor(name, predictions, signature, datatypes, count)
    except (KeyError, TypeError, AttributeError):
        raise HttpError(
            502, "UPSTREAM_ERROR", f"the model's answers do not hold its output {shorten(name, 40)}"
        ) from None


def _output_tensor(
    name: str, predictions: list, signature: Signature, datatypes: dict, count: int
) -> tuple[str, list[int], list]:
    if name == signature.scores_output:
        classes = signature.classes
        values = [record[name][cls] for record in predictions for cls in classes]
        return "FP64", [count, len(classes)], values
    if predictions and isinstance(predictions[0], dict):
        values = [record.get(name) for record in predictions]
    else:
        values = [_scalar(value) for value in predictions]
    datatype = datatypes.get(name, "BYTES")
    if not _fits(values, datatype):  # what the signature declared is not what the model answered
        datatype = "INT64" if _fits(values, "INT64") else "FP64" if _fits(values, "FP64") else "BYTES"
    if datatype == "BYTES":
        values = [str(value) for value in values]
    return datatype, [count, 1], values


def _fits(values: list, datatype: str) -> bool:
    """Whether every value can be sent as ``datatype`` without changing it."""
    if datatype == "BYTES":
        return True
    if datatype == "BOOL":
        return all(type(value) is bool for value in values)
    if datatype in INTEGERS:
        return all(type(value) is int for value in values)
    return datatype in NUMERIC and all(type(value) in (int, float) for value in values)


def _scalar(value):
    """One row's bare answer: MLflow answers ``[0, 2]`` or ``[[0], [2]]`` for a column of classes."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def to_binary(values: list, datatype: str) -> bytes:
    if datatype == "BYTES":  # each element: its length as a little-endian uint32, then its bytes
        encoded = [str(value).encode() for value in values]
        return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)
    if datatype == "BOOL":
        return bytes(bool(value) for value in values)
    packed = array.array(NUMERIC[datatype], values)
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
