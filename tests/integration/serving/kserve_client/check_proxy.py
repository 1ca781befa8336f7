"""Runs in the kserve client's own environment (requirements.txt beside it): asks a proxy what a KServe client asks.

``python check_proxy.py URL [TOKEN]`` prints one JSON object: the health and readiness
answers, and the outputs of an infer with JSON data and one with binary tensor data.
It imports nothing of the project: its environment has kserve and its dependencies only.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


async def main(url: str, token: str | None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        seen = {
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "model_ready": await client.is_model_ready(url, "iris"),
        }
        for binary in (False, True):
            inputs = []
            for column, name in enumerate(FEATURES):
                tensor = InferInput(name, [len(ROWS), 1], "FP64")
                tensor.set_data_from_numpy(ROWS[:, column : column + 1], binary_data=binary)
                inputs.append(tensor)
            request = InferRequest(model_name="iris", infer_inputs=inputs, request_id=f"kserve-{binary}")
            response = await client.infer(url, request, model_name="iris", headers=headers)
            seen["binary" if binary else "json"] = {
                "id": response.id,
                "outputs": {output.name: output.as_numpy().tolist() for output in response.outputs},
            }
        try:
            bad = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}
            await client.infer(url, bad, model_name="iris", headers=headers)
        except Exception as exc:  # the client's own error for a 4xx: its type and text
            seen["refused"] = f"{type(exc).__name__}: {exc}"
        return seen
    finally:
        await client.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)), default=str))
