"""Any MLflow classifier with a signature, served through the proxy with the contract its version carries.

The models are registered the ordinary MLflow way, without this project's code
(``tests.helpers.plain_models``); the proxy is started as a user starts it. Its answers must be
MLflow's own for the model (``mlflow.pyfunc.load_model(uri).predict``), in every format,
and every check of a request must come from the version's own names and types; a model
the proxy cannot check requests for is refused at start with one line.
"""

import shutil

import orjson
import pandas as pd
import pytest

from iris_core.records import read_log
from tests.helpers.plain_models import (
    COUNTS,
    FLOWERS,
    IRIS_PLAIN,
    TEXTS,
    UNSIGNED,
    WINE_PLAIN,
    iris_frame,
    mlflow_predict,
    wine_frame,
)
from tests.helpers.proxies import refused_start, running_proxy
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.support import wait_until
from tests.helpers.tracking import sqlite_uri

pytestmark = pytest.mark.slow

TOKEN = "plain-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def plain_store(plain_registry, tmp_path_factory):
    """This module's own copy of the plain registry (a test moves an alias)."""
    directory = tmp_path_factory.mktemp("plain-store")
    shutil.copyfile(plain_registry / "mlflow.db", directory / "mlflow.db")
    (directory / "mlruns").symlink_to(plain_registry / "mlruns")
    return directory


@pytest.fixture(scope="module")
def iris_proxy(plain_store, tmp_path_factory):
    work = tmp_path_factory.mktemp("iris-plain")
    logs = ("--prediction-log", str(work / "predictions.jsonl"), "--feedback-log", str(work / "feedback.jsonl"))
    with running_proxy(
        plain_store, work, "--model-uri", f"models:/{IRIS_PLAIN}@champion", "--api-token", TOKEN, *logs
    ) as proxy:
        proxy.work = work
        yield proxy


def test_a_plain_scikit_learn_model_answers_what_mlflow_answers_in_every_format(iris_proxy, plain_store):
    features, _ = iris_frame()
    frame = features.iloc[[0, 60, 120, 149]].reset_index(drop=True)
    expected = mlflow_predict(plain_store, f"models:/{IRIS_PLAIN}/1", frame)
    assert sorted(set(expected)) == [0, 1, 2]
    split = {"dataframe_split": orjson.loads(frame.to_json(orient="split", index=False))}
    bodies = {
        "application/json": orjson.dumps(split),
        "text/csv": frame.to_csv(index=False).encode(),
        "application/vnd.apache.parquet": frame.to_parquet(),
    }
    for content_type, body in bodies.items():
        answer = iris_proxy.post("/invocations", data=body, headers={**AUTH, "Content-Type": content_type})
        assert answer.status_code == 200, (content_type, answer.text)
        assert answer.json() == {"predictions": expected}, content_type
        assert answer.headers["X-Model-Version"] == "1"
    one = iris_proxy.post("/predict", json=frame.iloc[0].to_dict(), headers=AUTH)
    assert one.json() == {"prediction": expected[0]}


def test_its_readiness_and_health_come_from_its_signature_and_input_example(iris_proxy):
    assert iris_proxy.get("/ready").json() == {"status": "ready", "version": "1"}
    model = iris_proxy.health()["model"]
    assert model["contract"] == {"name": None, "origin": "signature", "features": 4}


def test_requests_are_checked_against_its_own_names_and_nothing_is_echoed(iris_proxy):
    record = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}
    missing = iris_proxy.post("/invocations", json={"dataframe_records": [{"sepal_length": 5.1}]}, headers=AUTH)
    assert missing.status_code == 400 and missing.json()["error_code"] == "INVALID_COLUMNS"
    assert "missing column: petal width (cm)" in missing.json()["details"]
    secret = "s3cr3t-value"
    bad = iris_proxy.post(
        "/invocations",
        json={
            "dataframe_records": [record, {**record, "petal width (cm)": secret}, {**record, "sepal width (cm)": None}]
        },
        headers=AUTH,
    )
    assert bad.status_code == 400 and secret not in bad.text
    assert bad.json()["details"] == [
        "row 1, column petal width (cm): must be a number, got a string",
        "row 2, column sepal width (cm): must be a number, got null",
    ]
    infinite = iris_proxy.post(
        "/invocations",
        data=b'{"dataframe_records": [{"sepal length (cm)": Infinity, "sepal width (cm)": 1, '
        b'"petal length (cm)": 1, "petal width (cm)": 1}]}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert infinite.json()["details"] == ["row 0, column sepal length (cm): must be finite"]
    assert iris_proxy.post("/invocations", json={"dataframe_records": [record]}).status_code == 401


def test_the_open_inference_protocol_takes_its_names_and_answers_its_output(iris_proxy, plain_store):
    features, _ = iris_frame()
    frame = features.iloc[[0, 149]].reset_index(drop=True)
    metadata = iris_proxy.get(f"/v2/models/{IRIS_PLAIN}").json()
    assert [tensor["name"] for tensor in metadata["inputs"]] == list(features.columns)
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1, 1]}]
    inputs = [
        {"name": name, "shape": [2, 1], "datatype": "FP64", "data": frame[name].tolist()} for name in frame.columns
    ]
    answer = iris_proxy.post(f"/v2/models/{IRIS_PLAIN}/infer", json={"inputs": inputs}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    expected = mlflow_predict(plain_store, f"models:/{IRIS_PLAIN}/1", frame)
    assert answer.json()["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [2, 1], "data": expected}]


def test_labels_for_its_answers_count_in_live_accuracy_and_both_logs_use_its_names(iris_proxy):
    features, target = iris_frame()
    rows = features.iloc[[0, 100]]
    answer = iris_proxy.post(
        "/invocations",
        json={"dataframe_records": orjson.loads(rows.to_json(orient="records"))},
        headers={**AUTH, "X-Request-Id": "plain-feedback"},
    )
    assert answer.status_code == 200
    labels = [
        {"request_id": "plain-feedback", "row": i, "label": int(target.iloc[index])} for i, index in enumerate([0, 100])
    ]
    fed = iris_proxy.post("/feedback", json=labels, headers=AUTH)
    assert fed.status_code == 200 and fed.json()["counted"] == 2, fed.text
    metrics = iris_proxy.get("/metrics").text
    assert f'proxy_live_labeled_rows_total{{model="{IRIS_PLAIN}",version="1"}} 2.0' in metrics
    path = iris_proxy.work / "predictions.jsonl"
    wait_until(lambda: path.exists() and "plain-feedback" in path.read_text(), 10, what="the logged rows")
    logged = [r for r in read_log(path).records if r["request_id"] == "plain-feedback"]
    assert list(logged[0]["features"]) == list(features.columns)
    assert logged[0]["confidence"] is None and logged[0]["prediction"] == "0"


def test_integer_features_take_integers_and_refuse_fractions(plain_store, tmp_path):
    millimetres = pd.DataFrame({"sl": [51, 67], "sw": [35, 30], "pl": [14, 52], "pw": [2, 23]})
    expected = mlflow_predict(plain_store, f"models:/{COUNTS}/1", millimetres)
    with running_proxy(plain_store, tmp_path, "--model-uri", f"models:/{COUNTS}/1") as proxy:
        split = {"dataframe_split": orjson.loads(millimetres.to_json(orient="split", index=False))}
        assert proxy.post("/invocations", json=split).json() == {"predictions": expected}
        fraction = proxy.post("/invocations", json={"dataframe_records": [{"sl": 51.5, "sw": 35, "pl": 14, "pw": 2}]})
        assert fraction.status_code == 400
        assert fraction.json()["details"] == ["row 0, column sl: must be an integer, got 51.5"]


def test_thirteen_wine_features_one_named_with_a_slash_are_served_as_mlflow_serves_them(plain_store, tmp_path):
    wine, _ = wine_frame()
    frame = wine.iloc[[0, 70, 170]].reset_index(drop=True)
    assert "od280/od315_of_diluted_wines" in frame.columns
    expected = mlflow_predict(plain_store, f"models:/{WINE_PLAIN}/1", frame)
    with running_proxy(plain_store, tmp_path, "--model-uri", f"models:/{WINE_PLAIN}@champion") as proxy:
        answer = proxy.post("/invocations", data=frame.to_csv(index=False), headers={"Content-Type": "text/csv"})
        assert answer.json() == {"predictions": expected} == {"predictions": [0, 1, 2]}


@pytest.mark.parametrize(
    "name, words",
    [
        (UNSIGNED, "the model has no signature; log it with one"),
        (TEXTS, "input 'text' of the model's signature is string"),
    ],
)
def test_a_model_the_proxy_cannot_check_requests_for_is_refused_at_start_with_one_line(plain_store, name, words):
    result = refused_start(plain_store, plain_store, "--model-uri", f"models:/{name}@champion", port=0)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_rollout_to_a_version_of_another_feature_set_loses_no_request_that_fits_the_version_it_reaches(
    plain_store, tmp_path
):
    """Version 2 of flowers reads only the petals. Clients send all four measurements, which fit either version;
    through a canary step and the switch, every request is answered, each by a version whose contract it fits."""
    import mlflow

    features, _ = iris_frame()
    record = features.iloc[[120]].to_dict(orient="records")[0]
    petals = pd.DataFrame([{k: v for k, v in record.items() if k.startswith("petal")}])
    expected = {
        "1": mlflow_predict(plain_store, f"models:/{FLOWERS}/1", pd.DataFrame([record]))[0],
        "2": mlflow_predict(plain_store, f"models:/{FLOWERS}/2", petals)[0],
    }
    client = mlflow.MlflowClient(sqlite_uri(plain_store))
    with running_proxy(
        plain_store,
        tmp_path,
        "--model-uri",
        f"models:/{FLOWERS}@champion",
        *("--poll-interval", "0.5", "--canary", "50,100", "--canary-step", "4", "--min-requests", "1000000"),
    ) as proxy:
        load = SteadyLoad(
            proxy, threads=3, max_seconds=240, path="/invocations", body={"dataframe_records": [record]}, keep=True
        )
        with load:
            wait_until(lambda: len(load.results) > 20, 60, what="traffic on version 1")
            client.set_registered_model_alias(FLOWERS, "champion", "2")
            wait_until(lambda: proxy.health()["rollout"] and proxy.health()["rollout"]["state"] == "canary", 240)
            wait_until(lambda: proxy.health()["rollout"]["state"] == "completed", 60, what="the switch")
            settled = len(load.results)
            wait_until(lambda: len(load.results) > settled + 20, 60, what="traffic on version 2")
        narrow = proxy.post("/invocations", json={"dataframe_records": [{"petal length (cm)": 5.1}]})
    assert load.failures == []
    versions = [version for _, version in load.results]
    assert {"1", "2"} <= set(versions)
    assert all(body == {"predictions": [expected[version]]} for version, body in load.bodies), (
        "an answer of another model"
    )
    assert narrow.status_code == 400 and narrow.json()["details"] == ["missing column: petal width (cm)"]
