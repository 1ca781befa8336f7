"""``python -m steps.batch_predict`` and ``mlflow run . -e batch_predict``: one-line errors, real runs."""

import os
import subprocess
import sys

import pytest

from tests.batch.files import read_any, write_csv
from tests.conftest import REPO, mlflow_cli


def batch_predict(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps.batch_predict", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "dask"], "error: engine must be one of pandas, spark, got 'dask'"),
        (["--chunk-size", "0"], "error: chunk_size must be a positive integer, got 0"),
        (["--chunk-size", "many"], "error: Invalid value for '--chunk-size'"),
        (["--output", "out.json"], "error: output must end in .csv or .parquet, got 'out.json'"),
    ],
)
def test_bad_parameters_exit_2_with_one_line(tmp_path, args, message):
    base = {"--input": str(tmp_path / "in.csv"), "--output": str(tmp_path / "out.csv")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    result = batch_predict(*[x for pair in base.items() for x in pair])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr


def test_a_missing_input_file_exits_1_with_one_line(registry, tmp_path):
    result = batch_predict("--input", str(tmp_path / "nowhere.csv"), "--output", str(tmp_path / "out.csv"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: input not found or not a file: {tmp_path / 'nowhere.csv'}"


def test_a_model_alias_that_is_not_set_exits_1_with_one_line(registry, tmp_path):
    write_csv(tmp_path / "in.csv", 10)
    result = batch_predict(
        "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"), "--model-uri", "models:/iris@nobody"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: no model version found for models:/iris@nobody"


@pytest.mark.slow
def test_mlflow_run_batch_predict_scores_a_file_into_the_batch_experiment(registry, tmp_path):
    import mlflow

    data = write_csv(tmp_path / "in.csv", 1200)
    result = mlflow_cli(
        "run",
        str(REPO),
        "-e",
        "batch_predict",
        "--env-manager",
        "local",
        "--experiment-name",
        "iris-batch-scoring",
        "-P",
        f"input={data.path}",
        "-P",
        f"output={tmp_path / 'scores.parquet'}",
        "-P",
        "chunk_size=400",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "scored 1200 of 1211 rows (pandas engine)" in result.stdout
    assert len(read_any(tmp_path / "scores.parquet")) == 1200
    assert len(read_any(tmp_path / "scores.rejects.parquet")) == 11
    (run,) = mlflow.search_runs(experiment_names=["iris-batch-scoring"], output_format="list")
    assert run.data.metrics["rows_rejected"] == 11
    assert run.data.params["engine"] == "pandas"
    assert run.data.tags["rejects_path"] == str(tmp_path / "scores.rejects.parquet")
