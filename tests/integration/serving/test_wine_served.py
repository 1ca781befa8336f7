"""A wine version the pipeline trained, served by the real proxy and monitored from the proxy's own logs.

The proxy learns the version's contract from the registry alone: it checks requests by
the wine features (names with a space and a slash), answers V2 metadata from them, takes
labels of the wine classes, and writes its logs under those names; ``monitor`` then reads
those very logs. Together with ``test_wine_project.py`` (every entry point with ``mlflow
run``, batch scoring with both engines) this is the wine table end to end.
"""

import shutil
import subprocess
import sys

import orjson
import pandas as pd
import pytest

from tests.helpers.proxies import running_proxy, serving_env
from tests.helpers.support import wait_until
from tests.helpers.tables import SLASHED, SPACED, WINE_CSV, WINE_LABEL, wine_features

pytestmark = pytest.mark.slow

TOKEN = {"Authorization": "Bearer w1ne"}


@pytest.fixture(scope="module")
def served(wine_store, tmp_path_factory):
    store = tmp_path_factory.mktemp("wine-served")
    shutil.copyfile(wine_store / "mlflow.db", store / "mlflow.db")
    (store / "mlruns").symlink_to(wine_store / "mlruns")
    logs = ("--prediction-log", str(store / "predictions.jsonl"), "--feedback-log", str(store / "feedback.jsonl"))
    with running_proxy(store, store, "--model-uri", "models:/wine@champion", "--api-token", "w1ne", *logs) as proxy:
        yield store, proxy


def test_the_proxy_is_ready_by_the_versions_readiness_row_and_says_which_contract_it_checks(served):
    _, proxy = served
    assert proxy.get("/ready").json()["status"] == "ready"
    assert proxy.health()["model"]["contract"] == {"name": "wine", "origin": "inferred", "features": 13}


def test_v2_metadata_names_the_wine_features_and_classes(served):
    _, proxy = served
    metadata = proxy.get("/v2/models/wine").json()
    assert [tensor["name"] for tensor in metadata["inputs"]] == wine_features()
    assert SPACED in wine_features() and SLASHED in wine_features()
    scores = next(tensor for tensor in metadata["outputs"] if tensor["name"] == "confidence_scores")
    assert scores["parameters"]["classes"] == ["0", "1", "2"] and scores["shape"] == [-1, 3]


def test_answers_are_mlflows_and_a_bad_value_is_named_by_its_row_and_column(served, wine_store):
    import mlflow

    store, proxy = served
    frame = pd.read_csv(wine_store / WINE_CSV).head(5)
    features = frame[wine_features()]
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    try:
        expected = mlflow.pyfunc.load_model("models:/wine@champion").predict(features)["prediction"].tolist()
    finally:
        mlflow.set_tracking_uri(None)
    split = {"dataframe_split": orjson.loads(features.to_json(orient="split", index=False))}
    answer = proxy.post("/invocations", json=split, headers=TOKEN)
    assert answer.status_code == 200 and [p["prediction"] for p in answer.json()["predictions"]] == expected
    bad = features.head(2).to_dict(orient="records")
    bad[1][SLASHED] = "high"
    refused = proxy.post("/invocations", json={"dataframe_records": bad}, headers=TOKEN)
    assert refused.status_code == 400 and "high" not in refused.text
    assert refused.json()["details"] == [f"row 1, column {SLASHED}: must be a number, got a string"]


def test_a_feedback_round_counts_live_accuracy_and_monitor_reads_the_proxys_own_logs(served, wine_store):
    store, proxy = served
    frame = pd.read_csv(wine_store / WINE_CSV).sample(60, random_state=3).reset_index(drop=True)
    records = orjson.loads(frame[wine_features()].to_json(orient="records"))
    answer = proxy.post(
        "/invocations", json={"dataframe_records": records}, headers={**TOKEN, "X-Request-Id": "wine-round"}
    )
    assert answer.status_code == 200
    labels = [{"request_id": "wine-round", "row": i, "label": int(label)} for i, label in enumerate(frame[WINE_LABEL])]
    fed = proxy.post("/feedback", json=labels, headers=TOKEN)
    assert fed.status_code == 200 and fed.json()["counted"] == 60, fed.text
    assert (
        proxy.post("/feedback", json={"request_id": "wine-round", "row": 0, "label": 7}, headers=TOKEN).status_code
        == 400
    )
    assert 'proxy_live_labeled_rows_total{model="wine",version="1"} 60.0' in proxy.get("/metrics").text
    wait_until(lambda: (store / "predictions.jsonl").exists() and (store / "feedback.jsonl").exists(), 10)
    wait_until(lambda: len((store / "feedback.jsonl").read_text().splitlines()) >= 60, 10, what="the labels on disk")
    monitor = subprocess.run(
        [sys.executable, "-m", "steps.monitor", "--predictions", "predictions.jsonl", "--feedback", "feedback.jsonl"]
        + ["--model-name", "wine", "--min-labeled-rows", "50"],
        cwd=store,
        env=serving_env(store),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert monitor.returncode == 0, monitor.stderr[-2000:]
    assert "wine version 1: no_drift" in monitor.stdout
    assert "wine version 1: no_performance_drop (live accuracy" in monitor.stdout
