"""The Open Inference Protocol's gRPC messages to feature rows, answers to messages: pure functions, no I/O.

The same rules as the protocol over REST (``serving.protocols.open_inference``), which this reuses:
inputs named after the version's features, each ``[n]`` or ``[n, 1]``, or one ``[n, k]``
tensor in feature order; numeric datatypes only; the values then meet the contract's rules
and the row limit (``serving.protocols.rows``). A tensor's values come either in its typed
``contents`` or, as Triton's client sends them, in ``raw_input_contents`` (one little-endian
buffer per input, in input order; all inputs or none). Outputs go back as
``raw_output_contents``, as Triton's server answers. Errors are ``HttpError``s, as
everywhere in the proxy; ``status_of`` gives each its gRPC status code.
"""

import array
import math

import grpc

from serving.errors import HttpError, shorten
from serving.protocols.grpc import messages
from serving.protocols.open_inference import (
    NUMERIC,
    InferRequest,
    Requested,
    Signature,
    from_binary,
    output_tensor,
    tensor_rows,
    to_binary,
)
from serving.protocols.rows import Limits, RowReader, ValidationError, check_count

MAX_INPUTS = 16
# Where each numeric datatype's values are in ``InferTensorContents``.
_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(exc: HttpError) -> grpc.StatusCode:
    return _STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


def message_of(exc: HttpError) -> str:
    """The error as one line: the message and its specifics, never the request's content."""
    if not exc.details:
        return exc.message
    head = exc.message.removesuffix(f" ({exc.details[0]})")
    return f"{head}: {'; '.join(exc.details)}"


def infer_request(message, limits: Limits, reader: RowReader, outputs: tuple[str, ...]) -> InferRequest:
    """The rows (in the contract's order) and requested outputs of a ``ModelInferRequest``."""
    if not message.inputs:
        raise _invalid("the request has no inputs")
    if len(message.inputs) > MAX_INPUTS:
        raise _invalid(f"at most {MAX_INPUTS} inputs, got {len(message.inputs)}")
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise _invalid(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs; give one per input or none")
    tensors = [
        _tensor(tensor, number, raw[number] if raw else None, limits, reader.width)
        for number, tensor in enumerate(message.inputs)
    ]
    rows = tensor_rows(tensors, limits, reader)
    requested = []
    for number, output in enumerate(message.outputs):
        if output.name not in outputs:
            shown = ", ".join(shorten(name, 40) for name in outputs)
            raise _invalid(f"outputs[{number}] must name one of {shown}")
        requested.append(Requested(output.name, True))
    wanted = tuple(requested) or tuple(Requested(name, True) for name in outputs)
    return InferRequest(rows, wanted, message.id or None)


def _tensor(tensor, number: int, raw: bytes | None, limits: Limits, width: int) -> tuple[str, list[int], list]:
    where = f"inputs[{number}]"  # never the client's name: nothing from a request is echoed
    shape = list(tensor.shape)
    if not shape or any(size < 0 for size in shape):
        raise _invalid(f"{where}: shape must be a list of sizes")
    if len(shape) > 2 or math.prod(shape) > limits.max_rows * width:
        check_count(shape[0], limits)
        raise _invalid(f"{where}: shape {shape[:4]} is neither [n], [n, 1] nor [n, {width}]")
    datatype = tensor.datatype
    if datatype not in NUMERIC:
        raise _invalid(f"{where}: datatype {shorten(datatype, 20)!r} is not one of {', '.join(NUMERIC)}")
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise _invalid(f"{where} has both contents and raw_input_contents")
        size = count * _ITEM_SIZE[datatype]
        if len(raw) != size:
            raise _invalid(f"{where}: raw_input_contents must be {count} x the size of {datatype}, {size} bytes")
        return tensor.name, shape, from_binary(raw, datatype)
    values = list(getattr(tensor.contents, _CONTENTS[datatype]))
    if len(values) != count:
        raise _invalid(f"{where}: {len(values)} values for shape {shape}")
    return tensor.name, shape, values


_ITEM_SIZE = {datatype: array.array(code).itemsize for datatype, code in NUMERIC.items()}


def infer_response(model_name: str, version: str, request: InferRequest, predictions: list, signature: Signature):
    """The ``ModelInferResponse``: every requested output, its values as raw little-endian bytes."""
    response = messages.ModelInferResponse(model_name=model_name, model_version=version, id=request.id or "")
    datatypes = dict(signature.outputs)
    for wanted in request.outputs:
        datatype, shape, values = output_tensor(wanted.name, predictions, signature, datatypes, len(predictions))
        response.outputs.add(name=wanted.name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(to_binary(values, datatype))
    return response


def model_metadata(name: str, versions: list[str], signature: Signature):
    """The ``ModelMetadataResponse`` of the version the request names: the REST metadata's tensors."""
    from serving.protocols.open_inference import model_metadata as rest_metadata

    document = rest_metadata(name, versions, signature)
    response = messages.ModelMetadataResponse(name=name, versions=versions, platform=document["platform"])
    for tensor in document["inputs"]:
        response.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    for tensor in document["outputs"]:
        response.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return response


def _invalid(message: str) -> ValidationError:
    return ValidationError(400, "INVALID_FORMAT", message)
