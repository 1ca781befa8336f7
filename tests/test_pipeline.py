"""Integration tests: the real ``mlflow run`` of this project against temporary stores.

One module-scoped store goes through three pipeline runs (pass, pass, forced failure);
the tests read what they left behind. Single-step and error runs get their own stores.
"""

import os

import pytest
import requests

from iris_core.alias_history import alias_history
from iris_core.resolver import alias_version
from iris_core.schema import CLASSES, FEATURES
from tests.conftest import REPO, mlflow_cli, sqlite_uri
from tests.support import free_port, http_ok, stop_process, wait_until

pytestmark = pytest.mark.slow


def run_project(store_dir, *args):
    return mlflow_cli(
        "run",
        str(REPO),
        "--env-manager",
        "local",
        *args,
        cwd=store_dir,
        env={"MLFLOW_TRACKING_URI": sqlite_uri(store_dir)},
    )


@pytest.fixture(scope="module")
def pipeline_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("pipeline")
    experiment = ("--experiment-name", "iris-classification")
    results = [
        run_project(store, *experiment),
        run_project(store, *experiment, "-P", "C=0.5"),
        run_project(store, *experiment, "-P", "min_accuracy=1.01"),
    ]
    return store, results


@pytest.fixture
def client(pipeline_store):
    from mlflow import MlflowClient

    uri = sqlite_uri(pipeline_store[0])
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def training_run(client, version):
    return client.get_run(client.get_model_version("iris", version).run_id)


def test_first_pipeline_run_succeeds_and_makes_version_1_champion(pipeline_store, client):
    first = pipeline_store[1][0]
    assert first.returncode == 0, first.stderr[-2000:]
    assert "@champion -> version 1" in first.stdout
    history = alias_history(client, "iris", "champion")
    assert [(m.from_version, m.to_version, m.how) for m in reversed(history)] == [
        (None, "1", "gate"),
        ("1", "2", "gate"),
    ]


def test_training_run_logs_params_metrics_and_artifacts(client):
    run = training_run(client, "1")
    assert run.data.params == {
        "model_type": "LogisticRegression",
        "max_iter": "200",
        "C": "1.0",
        "solver": "lbfgs",
        "random_state": "42",
        "test_size": "0.2",
    }
    for metric in ("accuracy", "precision", "recall", "f1_score", *(f"f1_{c}" for c in CLASSES)):
        assert 0.9 <= run.data.metrics[metric] <= 1.0, metric
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "classification_report.txt", "data"} <= artifacts
    assert run.data.tags["data_source"] == "csv"


def test_training_run_logs_the_dataset_input_with_source_and_digest(client):
    inputs = training_run(client, "1").inputs.dataset_inputs
    dataset = next(i.dataset for i in inputs if any(t.value == "training" for t in i.tags))
    assert dataset.digest
    assert "iris.csv" in dataset.source


def test_model_version_carries_its_signature_and_input_example(client):
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
    try:
        info = get_model_info("models:/iris/1")
    finally:
        mlflow.set_tracking_uri(None)
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(FEATURES)
    assert all(c["type"] == "double" for c in info.signature.inputs.to_dict())
    assert info.saved_input_example_info


def test_pipeline_nests_three_step_runs_under_one_parent(pipeline_store, client):
    experiment = client.get_experiment_by_name("iris-classification")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 3
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[-1].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["evaluate", "train", "validate_data"]


def test_second_passing_run_moves_champion_and_challenger(client):
    assert alias_version(client, "iris", "champion") == "2"
    assert client.get_model_version("iris", "2").tags["gate_decision"] == "passed"


def test_forced_failing_gate_exits_nonzero_and_leaves_champion(pipeline_store, client):
    failed = pipeline_store[1][2]
    assert failed.returncode != 0
    assert "accuracy" in failed.stdout and "< min_accuracy 1.01" in failed.stdout
    assert alias_version(client, "iris", "champion") == "2"
    assert alias_version(client, "iris", "challenger") == "3"
    tags = client.get_model_version("iris", "3").tags
    assert tags["gate_decision"] == "failed"
    assert "min_accuracy 1.01" in tags["gate_reasons"]


def test_models_serve_of_the_champion_answers_with_the_promised_shape(pipeline_store):
    import subprocess

    from serving.upstream import serve_command

    store = pipeline_store[0]
    port = free_port()
    proc = subprocess.Popen(
        serve_command("models:/iris@champion", port),
        cwd=store,
        env={**os.environ, "MLFLOW_TRACKING_URI": sqlite_uri(store)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), timeout=120, what="models serve")
        body = {"dataframe_split": {"columns": list(FEATURES), "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
    finally:
        stop_process(proc)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["prediction"] for p in predictions] == ["setosa", "virginica"]
    assert [p["prediction_index"] for p in predictions] == [0, 2]
    for p in predictions:
        assert set(p["confidence_scores"]) == set(CLASSES)
        assert p["confidence"] == max(p["confidence_scores"].values())


def test_single_steps_run_as_entry_points_and_a_missing_csv_falls_back(tmp_path):
    # validate_data as a single step: see the uv test below.
    trained = run_project(
        tmp_path, "-e", "train", "-P", "max_iter=300", "-P", "C=0.5", "-P", "data_path=/nonexistent/iris.csv"
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "registered models:/iris/1 as @challenger" in trained.stdout
    evaluated = run_project(tmp_path, "-e", "evaluate", "-P", "model_uri=models:/iris/1")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "@champion -> version 1" in evaluated.stdout

    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(client.get_model_version("iris", "1").run_id)
    assert run.data.params["max_iter"] == "300" and run.data.params["C"] == "0.5"
    assert run.data.tags["data_source"] == "sklearn_fallback"
    assert run.data.tags["data_fallback_reason"] == "file not found: /nonexistent/iris.csv"


def test_bad_hyperparameter_under_mlflow_run_fails_in_one_line_and_trains_nothing(tmp_path):
    result = run_project(tmp_path, "-e", "train", "-P", "max_iter=-3")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: max_iter must be a positive integer, got -3"]
    assert "Traceback" not in result.stderr
    from mlflow import MlflowClient

    client = MlflowClient()
    assert client.search_registered_models() == []
    # `mlflow run` itself creates the project run before the step starts; the step must
    # leave it without metrics or a model and let it end as FAILED.
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs and all(r.info.status == "FAILED" and not r.data.metrics for r in runs)


def test_uv_env_manager_runs_a_step_in_an_isolated_env_built_from_python_env_yaml(tmp_path):
    result = run_project(
        tmp_path, "--env-manager", "uv", "-e", "validate_data", "-P", f"data_path={REPO / 'data' / 'iris.csv'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "/.mlflow/envs/" in result.stderr  # the step ran inside MLflow's own environment
    assert "150 rows from csv" in result.stdout
