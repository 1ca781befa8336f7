"""The Open Inference Protocol through clients no one here wrote: Triton's (tritonclient[http]) and KServe's SDK.

Against the real proxy in front of a real `mlflow models serve`. Triton's client runs in
this process with its default settings (binary tensor data both ways); KServe's runs in
an environment of its own (``kserve_client/requirements.txt`` says why), built with uv.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.helpers.iris import CLASSES, FEATURES
from tests.helpers.proxies import shared_upstream_proxy
from tests.helpers.tracking import BIN

pytestmark = pytest.mark.slow

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
OUTPUTS = ("prediction", "prediction_index", "confidence", "confidence_scores")
KSERVE_CLIENT = Path(__file__).parent / "kserve_client"


def client_for(proxy) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        url=proxy.url.removeprefix("http://"), connection_timeout=30, network_timeout=60
    )


def feature_tensors(rows=ROWS, datatype="FP64", binary=True) -> list:
    tensors = []
    for column, name in enumerate(FEATURES):
        tensor = triton.InferInput(name, [len(rows), 1], datatype)
        tensor.set_data_from_numpy(rows[:, column : column + 1].astype(triton_dtype(datatype)), binary_data=binary)
        tensors.append(tensor)
    return tensors


def triton_dtype(datatype: str):
    return {"FP64": np.float64, "FP32": np.float32, "INT32": np.int32}[datatype]


@pytest.fixture(scope="module")
def invocations(proxy) -> list[dict]:
    """What /invocations answers for ROWS: the V2 answers must say the same."""
    split = {"columns": list(FEATURES), "data": ROWS.tolist()}
    return proxy.post("/invocations", json={"dataframe_split": split}).json()["predictions"]


def test_tritons_client_sees_the_server_and_the_model_live_and_ready(proxy):
    client = client_for(proxy)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    assert client.is_model_ready("iris", model_version="2") and not client.is_model_ready("iris", model_version="1")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


def test_tritons_client_reads_the_metadata_of_the_models_signature(proxy):
    metadata = client_for(proxy).get_model_metadata("iris")
    assert metadata == client_for(proxy).get_model_metadata("iris", model_version="2")
    assert metadata["versions"] == ["2"]
    assert metadata["inputs"] == [{"name": name, "datatype": "FP64", "shape": [-1, 1]} for name in FEATURES]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("prediction", "BYTES", [-1, 1]),
        ("prediction_index", "INT64", [-1, 1]),
        ("confidence", "FP64", [-1, 1]),
        ("confidence_scores", "FP64", [-1, 3]),
    ]
    assert metadata["outputs"][3]["parameters"] == {"classes": list(CLASSES)}


def test_tritons_client_with_default_settings_gets_the_same_predictions_as_invocations(proxy, invocations):
    result = client_for(proxy).infer("iris", feature_tensors(), request_id="triton-1")
    response = result.get_response()
    assert response["id"] == "triton-1" and response["model_version"] == "2"
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])
    assert [v.decode() for v in result.as_numpy("prediction")[:, 0]] == [p["prediction"] for p in invocations]
    assert result.as_numpy("prediction_index")[:, 0].tolist() == [p["prediction_index"] for p in invocations]
    assert result.as_numpy("confidence")[:, 0].tolist() == [p["confidence"] for p in invocations]
    expected = [[p["confidence_scores"][name] for name in CLASSES] for p in invocations]
    assert result.as_numpy("confidence_scores").tolist() == expected


def test_json_data_one_four_column_tensor_and_chosen_outputs_give_the_same_answer(proxy, invocations):
    client = client_for(proxy)
    wanted = [triton.InferRequestedOutput("prediction", binary_data=False), triton.InferRequestedOutput("confidence")]
    for inputs in (feature_tensors(binary=False), [_one_tensor(ROWS.astype(np.float32))]):
        result = client.infer("iris", inputs, outputs=wanted)
        outputs = result.get_response()["outputs"]
        assert [o["name"] for o in outputs] == ["prediction", "confidence"]
        assert outputs[0]["data"] == [p["prediction"] for p in invocations]
        assert result.as_numpy("confidence")[:, 0] == pytest.approx([p["confidence"] for p in invocations], rel=1e-6)


def _one_tensor(rows: np.ndarray):
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_a_versioned_infer_names_its_version_and_an_unloaded_version_is_404_naming_the_loaded_ones(proxy):
    client = client_for(proxy)
    assert client.infer("iris", feature_tensors(), model_version="2").get_response()["model_version"] == "2"
    with pytest.raises(InferenceServerException) as refused:
        client.infer("iris", feature_tensors(), model_version="1")
    assert refused.value.status() == "404" and "loaded versions: 2" in refused.value.message()


def test_tritons_client_gets_the_value_rules_of_invocations_as_protocol_errors(proxy):
    bad = ROWS.copy()
    bad[1, 2] = -1.0
    with pytest.raises(InferenceServerException) as refused:
        client_for(proxy).infer("iris", feature_tensors(bad))
    assert refused.value.status() == "400"
    assert "row 1, column petal_length: must be > 0 and <= 1e+06, got -1" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client_for(proxy).infer("lily", feature_tensors())
    assert unknown.value.status() == "404"


def test_every_v2_answer_carries_the_model_version_and_request_id_headers(proxy):
    body = {
        "inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [ROWS[0][i]]} for i, n in enumerate(FEATURES)]
    }
    for path in ("/v2/models/iris/infer", "/v2/models/iris/versions/2/infer"):
        response = proxy.post(path, json=body, headers={"X-Request-Id": "v2-req"})
        assert response.status_code == 200
        assert response.headers["X-Model-Version"] == "2" and response.headers["X-Request-Id"] == "v2-req"


def test_tritons_client_passes_the_bearer_token_and_is_refused_without_it(trained_registry, upstream_url, tmp_path):
    with shared_upstream_proxy(trained_registry, tmp_path, upstream_url, token="v2-token") as guarded:
        client = client_for(guarded)
        assert client.is_server_ready() and client.get_model_metadata("iris")["name"] == "iris"
        with pytest.raises(InferenceServerException) as refused:
            client.infer("iris", feature_tensors())
        assert refused.value.status() == "401" and "bearer token" in refused.value.message()
        answer = client.infer("iris", feature_tensors(), headers={"Authorization": "Bearer v2-token"})
        assert answer.as_numpy("prediction")[0, 0] == b"setosa"


# -- KServe's SDK --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kserve_python(tmp_path_factory) -> Path:
    """A Python with the kserve SDK at the versions kserve_client/requirements.txt pins, beside nothing of ours."""
    venv = tmp_path_factory.mktemp("kserve-client") / "venv"
    uv = str(BIN / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "-q", "--python", str(python), "-r", str(KSERVE_CLIENT / "requirements.txt")]
    subprocess.run(install, check=True, timeout=900)
    return python


def test_kserves_rest_client_checks_health_and_infers_with_json_and_binary_data(kserve_python, proxy, invocations):
    result = subprocess.run(
        [str(kserve_python), str(KSERVE_CLIENT / "check_proxy.py"), proxy.url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    for form in ("json", "binary"):
        outputs = seen[form]["outputs"]
        assert seen[form]["id"] == f"kserve-{form == 'binary'}"
        assert [row[0] for row in outputs["prediction"]] == [p["prediction"] for p in invocations]
        assert [row[0] for row in outputs["prediction_index"]] == [p["prediction_index"] for p in invocations]
        assert outputs["confidence_scores"] == [[p["confidence_scores"][c] for c in CLASSES] for p in invocations]
    assert "names no feature" in seen["refused"] and "400" in seen["refused"]


def test_a_refused_infer_carries_no_trace_and_no_echo_of_the_request(proxy):
    secret = "k" * 200
    body = {"inputs": [{"name": secret, "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    response = requests.post(proxy.url + "/v2/models/iris/infer", json=body, timeout=30)
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert secret not in response.text and "Traceback" not in response.text
