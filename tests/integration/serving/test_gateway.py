"""Two registered models behind one real proxy, over MLflow's protocol, V2 REST and V2 gRPC with Triton's client.

The models are registered the plain MLflow way (``tests.helpers.plain_models``), each served by
its own `mlflow models serve` that the proxy starts; the proxy is given them in
``SERVING_MODEL_URI`` as a deployment would. A rollout of one of them, under load on the
other, never touches the other's answers; a model URI that cannot be resolved among
several stops the start with one line naming it.
"""

import shutil

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton

from tests.helpers.plain_models import FLOWERS, IRIS_PLAIN, iris_frame, mlflow_predict
from tests.helpers.proxies import refused_start, running_proxy
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.support import free_port, wait_until
from tests.helpers.tracking import sqlite_uri

pytestmark = pytest.mark.slow

TOKEN = "tw0-models"


@pytest.fixture(scope="module")
def gateway(plain_registry, tmp_path_factory, monkeypatch_module):
    store = tmp_path_factory.mktemp("gateway")
    shutil.copyfile(plain_registry / "mlflow.db", store / "mlflow.db")
    (store / "mlruns").symlink_to(plain_registry / "mlruns")
    grpc_port = free_port()
    monkeypatch_module.setenv("SERVING_MODEL_URI", f"models:/{IRIS_PLAIN}@champion,models:/{FLOWERS}@champion")
    monkeypatch_module.setenv("SERVING_API_TOKEN", TOKEN)
    args = ("--grpc-port", str(grpc_port), "--poll-interval", "0.5")
    with running_proxy(store, store, *args) as proxy:
        proxy.store, proxy.grpc = store, f"127.0.0.1:{grpc_port}"
        yield proxy


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def rows() -> pd.DataFrame:
    features, _ = iris_frame()
    return features.iloc[[0, 75, 140]].reset_index(drop=True)


def grpc_inputs(frame: pd.DataFrame) -> list:
    inputs = []
    for name in frame.columns:
        tensor = triton.InferInput(name, [len(frame), 1], "FP64")
        tensor.set_data_from_numpy(frame[[name]].to_numpy(dtype=np.float64))
        inputs.append(tensor)
    return inputs


def test_both_models_answer_what_mlflow_answers_over_grpc_with_the_triton_client(gateway):
    client = triton.InferenceServerClient(gateway.grpc)
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert client.is_server_ready() and client.is_model_ready(IRIS_PLAIN) and client.is_model_ready(FLOWERS)
    frame = rows()
    for name in (IRIS_PLAIN, FLOWERS):
        metadata = client.get_model_metadata(name, as_json=True)
        assert [tensor["name"] for tensor in metadata["inputs"]] == list(frame.columns)
        answer = client.infer(name, grpc_inputs(frame), headers=auth)
        expected = mlflow_predict(gateway.store, f"models:/{name}/1", frame)
        assert answer.as_numpy("predictions").ravel().tolist() == expected
        assert answer.get_response().model_version == "1"


def test_the_routes_name_each_model_and_the_first_answers_the_unnamed_ones(gateway):
    frame = rows()
    body = {"dataframe_records": frame.to_dict(orient="records")}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    unnamed = gateway.post("/invocations", json=body, headers=auth).json()
    assert unnamed == {"predictions": mlflow_predict(gateway.store, f"models:/{IRIS_PLAIN}/1", frame)}
    for name in (IRIS_PLAIN, FLOWERS):
        answer = gateway.post(f"/models/{name}/invocations", json=body, headers=auth)
        assert answer.status_code == 200
        assert answer.json() == {"predictions": mlflow_predict(gateway.store, f"models:/{name}/1", frame)}
    unknown = gateway.post("/models/nothing/invocations", json=body, headers=auth)
    assert unknown.status_code == 404 and unknown.json()["details"] == [f"served models: {IRIS_PLAIN}, {FLOWERS}"]
    health = gateway.health()
    assert set(health["models"]) == {IRIS_PLAIN, FLOWERS} and health["status"] == "healthy"
    assert gateway.get("/ready").json()["models"] == {IRIS_PLAIN: "1", FLOWERS: "1"}
    metrics = gateway.get("/metrics").text
    assert f'proxy_model_info{{alias="champion",model="{FLOWERS}",name="{FLOWERS}",version="1"}} 1.0' in metrics


def test_a_rollout_of_one_model_under_load_on_the_other_never_touches_the_others_answers(gateway):
    import mlflow

    frame = rows().head(1)
    expected = mlflow_predict(gateway.store, f"models:/{IRIS_PLAIN}/1", frame)
    client = mlflow.MlflowClient(sqlite_uri(gateway.store))
    load = SteadyLoad(
        gateway,
        threads=2,
        max_seconds=180,
        path=f"/models/{IRIS_PLAIN}/invocations",
        body={"dataframe_records": frame.to_dict(orient="records")},
        keep=True,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with load:
        wait_until(lambda: len(load.results) > 10, 60, what="traffic on iris_plain")
        client.set_registered_model_alias(FLOWERS, "champion", "2")
        wait_until(lambda: gateway.health()["models"][FLOWERS]["version"] == "2", 180, what="flowers on version 2")
        settled = len(load.results)
        wait_until(lambda: len(load.results) > settled + 10, 60, what="traffic after the switch")
    assert load.failures == []
    assert {version for version, _ in load.bodies} == {"1"}
    assert all(body == {"predictions": expected} for _, body in load.bodies)
    assert gateway.health()["models"][IRIS_PLAIN]["version"] == "1"


def test_a_model_uri_that_cannot_be_resolved_among_several_stops_the_start_with_one_line_naming_it(
    plain_registry, tmp_path
):
    result = refused_start(
        plain_registry,
        tmp_path,
        "--model-uri",
        f"models:/{IRIS_PLAIN}@champion",
        "--model-uri",
        "models:/nothing@champion",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot resolve models:/nothing@champion"), result.stderr
