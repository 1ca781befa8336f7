"""The Open Inference Protocol over gRPC, driven by Triton's own asyncio client, in the proxy's event loop.

Two models behind one proxy (``tests.unit.serving.test_gateway``), with model servers the test
controls: readiness and metadata per model, infer with the client's default settings
(binary tensors) for both, the token in the call's metadata, the answering version in the
trailing metadata, and every refusal as its gRPC status with a message that echoes nothing.
"""

import asyncio

import grpc
import numpy as np
import pytest
from tritonclient.grpc import aio as triton
from tritonclient.utils import InferenceServerException

from serving.protocols.grpc import messages
from tests.helpers.apps import TOKEN
from tests.helpers.gateway_app import WINE_FEATURES, serve
from tests.helpers.iris import FEATURES
from tests.helpers.support import free_port


def grpc_serve(tmp_path, body, **settings):
    port = free_port()

    async def with_client(http, iris, wine):
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            await body(client, port, iris, wine)
        finally:
            await client.close()

    serve(tmp_path, with_client, grpc_port=port, **settings)


def tensors(names, rows, datatype="FP64"):
    inputs = []
    for column, name in enumerate(names):
        tensor = triton.InferInput(name, [len(rows), 1], datatype)
        tensor.set_data_from_numpy(
            np.array([[row[column]] for row in rows], dtype=np.float64 if datatype == "FP64" else np.float32)
        )
        inputs.append(tensor)
    return inputs


IRIS_ROWS = [(5.1, 3.5, 1.4, 0.2), (6.7, 3.0, 5.2, 2.3)]
WINE_ROWS = [(13.2, 3.1), (12.4, 1.6)]


def test_readiness_and_metadata_of_each_model(tmp_path):
    async def body(client, port, iris, wine):
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready("wine") and await client.is_model_ready("iris", "2")
        metadata = await client.get_model_metadata("wine", as_json=True)
        assert [tensor["name"] for tensor in metadata["inputs"]] == list(WINE_FEATURES)
        assert metadata["outputs"] == [{"name": "predictions", "datatype": "BYTES", "shape": ["-1", "1"]}]
        server = await client.get_server_metadata(as_json=True)
        assert server["name"] == "iris-mlops" and "binary_tensor_data" in server["extensions"]

    grpc_serve(tmp_path, body)


def test_infer_with_the_clients_defaults_answers_both_models_and_names_the_version(tmp_path):
    async def body(client, port, iris, wine):
        answer = await client.infer("iris", tensors(FEATURES, IRIS_ROWS), headers=TOKEN_METADATA)
        assert answer.as_numpy("prediction").ravel().tolist() == [b"setosa", b"setosa"]
        assert answer.get_response().model_version == "2"
        other = await client.infer("wine", tensors(WINE_FEATURES, WINE_ROWS, "FP32"), headers=TOKEN_METADATA)
        assert other.as_numpy("predictions").ravel().tolist() == [b"1", b"1"]
        assert [len(row) for call in wine.calls for row in call] == [2, 2]

    grpc_serve(tmp_path, body)


TOKEN_METADATA = {"authorization": TOKEN["Authorization"]}


async def status_of(call) -> tuple[grpc.StatusCode | str, str]:
    try:
        await call
    except InferenceServerException as exc:
        return exc.status(), exc.message()
    return "OK", ""


def test_every_refusal_has_its_status_and_echoes_nothing(tmp_path):
    secret = "s3cr3t-name"

    async def body(client, port, iris, wine):
        cases = {
            "no token": (client.infer("iris", tensors(FEATURES, IRIS_ROWS)), "StatusCode.UNAUTHENTICATED"),
            "unknown model": (
                client.infer(secret, tensors(FEATURES, IRIS_ROWS), headers=TOKEN_METADATA),
                "StatusCode.NOT_FOUND",
            ),
            "unknown input": (
                client.infer("iris", tensors([secret, *FEATURES[1:]], IRIS_ROWS), headers=TOKEN_METADATA),
                "StatusCode.INVALID_ARGUMENT",
            ),
            "a value out of its rule": (
                client.infer("iris", tensors(FEATURES, [(-1.0, 3.5, 1.4, 0.2)]), headers=TOKEN_METADATA),
                "StatusCode.INVALID_ARGUMENT",
            ),
            "too many rows": (
                client.infer("iris", tensors(FEATURES, IRIS_ROWS * 3), headers=TOKEN_METADATA),
                "StatusCode.RESOURCE_EXHAUSTED",
            ),
            "a version not loaded": (
                client.infer("iris", tensors(FEATURES, IRIS_ROWS), model_version="9", headers=TOKEN_METADATA),
                "StatusCode.NOT_FOUND",
            ),
        }
        for case, (call, expected) in cases.items():
            status, message = await status_of(call)
            assert status == expected, (case, status, message)
            assert secret not in message and "Traceback" not in message, case

    grpc_serve(tmp_path, body, max_rows=5)


def test_a_message_past_the_body_limit_is_refused_by_grpc_itself(tmp_path):
    async def body(client, port, iris, wine):
        big = triton.InferInput(FEATURES[0], [40_000, 1], "FP64")
        big.set_data_from_numpy(np.ones((40_000, 1)))
        status, _ = await status_of(client.infer("iris", [big], headers=TOKEN_METADATA))
        assert status == "StatusCode.RESOURCE_EXHAUSTED"
        assert iris.calls == []

    grpc_serve(tmp_path, body, max_body_bytes=100_000)


def test_a_client_that_cancels_mid_call_is_counted_apart_and_the_proxy_answers_the_next(tmp_path):
    async def body(client, port, iris, wine):
        iris.hold()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer = channel.unary_unary(
                f"/{messages.SERVICE}/ModelInfer",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=messages.ModelInferResponse.FromString,
            )
            request = messages.ModelInferRequest(model_name="iris")
            for name, value in zip(FEATURES, IRIS_ROWS[0]):
                request.inputs.add(name=name, datatype="FP64", shape=[1, 1]).contents.fp64_contents.append(value)
            call = infer(request, metadata=tuple(TOKEN_METADATA.items()), timeout=30)
            while not iris.calls:
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            iris.release()
            answer = await infer(request, metadata=tuple(TOKEN_METADATA.items()), timeout=30)
            assert answer.outputs[0].name == "prediction"

    grpc_serve(tmp_path, body)
