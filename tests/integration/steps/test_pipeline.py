"""Integration tests: the real ``mlflow run`` of this project on what the README's walk-through does not show.

The README's own commands (the pipeline, each entry point, a failing gate) run in
``tests/integration/docs/test_readme.py``; here, each in a store of its own: a refused parameter, and a
step in an isolated ``uv`` environment that falls back from a missing CSV.
"""

import pytest

from tests.helpers.tracking import REPO, mlflow_cli, sqlite_uri

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


def all_runs(client) -> list:
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_bad_hyperparameter_under_mlflow_run_fails_in_one_line_exit_1_and_trains_nothing(tmp_path):
    result = run_project(tmp_path, "--experiment-name", "iris-classification", "-e", "train", "-P", "max_iter=-3")
    assert result.returncode == 1  # MLflow's launcher: 1 for any failure of the entry point (README)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: max_iter must be a positive integer, got -3"]
    assert "Traceback" not in result.stderr
    from mlflow import MlflowClient

    client = MlflowClient()
    assert client.search_registered_models() == []
    # `mlflow run` itself creates the project run before the step starts; the step must
    # leave it without metrics or a model and let it end as FAILED.
    runs = all_runs(client)
    assert runs and all(r.info.status == "FAILED" and not r.data.metrics for r in runs)


def test_uv_env_manager_runs_a_step_in_an_isolated_env_and_a_missing_csv_falls_back_with_its_reason(tmp_path):
    result = run_project(
        tmp_path,
        "--env-manager",
        "uv",
        "--experiment-name",
        "iris-classification",
        "-e",
        "validate_data",
        "-P",
        "data_path=/nonexistent/iris.csv",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "/.mlflow/envs/" in result.stderr  # the step ran inside MLflow's own environment
    assert "150 rows from sklearn_fallback" in result.stdout
    from mlflow import MlflowClient

    [run] = all_runs(MlflowClient())
    assert run.info.run_name == "validate_data"
    assert run.data.tags["data_source"] == "sklearn_fallback"
    assert run.data.tags["data_fallback_reason"] == "file not found: /nonexistent/iris.csv"
