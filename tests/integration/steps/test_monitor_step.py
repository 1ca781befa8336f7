"""The ``monitor`` step against a real registry as ``python -m steps.monitor`` and through ``mlflow run`` (in process: ``tests/unit/steps/test_monitor_step.py``)."""

import subprocess
import sys

import pytest

from iris_core.contract import MONITORING_EXPERIMENT
from tests.helpers.tracking import REPO, mlflow_cli, monitoring_runs
from tests.helpers.traffic import served_traffic, write_log


def step(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps.monitor", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_too_few_rows_give_no_verdict_exit_0_and_tag_insufficient_data(registry, tmp_path):
    log = write_log(tmp_path / "predictions.jsonl", served_traffic(registry, "2").head(10))
    result = step("--predictions", str(log))
    assert result.returncode == 0, result.stderr
    assert "insufficient_data (10 rows)" in result.stdout and "no verdict: at least 30 rows needed" in result.stdout
    assert registry.client().get_model_version("iris", "2").tags["drift_status"] == "insufficient_data"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--alpha", "2"], 2, "error: alpha must be between 0 and 1, got 2.0"),
        (["--min-rows", "1"], 2, "error: min_rows must be at least 2, got 1"),
        (["--model-name", "nope"], 1, "error: no registered model named 'nope'"),
        (["--alias", "gone"], 1, "error: iris has no alias @gone (aliases: @challenger, @champion)"),
        (["--version", "99"], 1, "error: iris has no version 99"),
    ],
)
def test_bad_parameters_fail_in_one_line(registry, tmp_path, args, code, message):
    log = write_log(tmp_path / "predictions.jsonl", served_traffic(registry, "2").head(3))
    result = step("--predictions", str(log), *args)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (code, message)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_missing_log_file_is_a_usage_error(registry, tmp_path):
    result = step("--predictions", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_mlflow_run_monitor_of_a_relative_path_fails_on_drift_and_tags_the_version(registry, tmp_path):
    """``predictions`` is a ``path`` parameter: MLflow logs it as typed and hands the step an absolute path."""
    (tmp_path / "logs").mkdir()
    write_log(tmp_path / "logs" / "predictions.jsonl", served_traffic(registry, "2", shift="petal_length", rows=200))
    result = mlflow_cli(
        "run",
        str(REPO),
        "-e",
        "monitor",
        "--env-manager",
        "local",
        "--experiment-name",
        MONITORING_EXPERIMENT,
        "-P",
        "predictions=logs/predictions.jsonl",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "iris version 2: drift" in result.stdout, result.stderr[-2000:]
    client = registry.client()
    [run] = monitoring_runs(client)
    assert run.data.tags["drift_status"] == "drift" and run.data.metrics["drift_detected"] == 1
    assert run.data.params["alpha"] == "0.01" and run.data.params["predictions"] == "logs/predictions.jsonl"
    assert run.info.run_name == "monitor"
    assert client.get_model_version("iris", "2").tags["drift_run_id"] == run.info.run_id
