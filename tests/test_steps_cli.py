"""The steps' command lines: bad parameters give one line and exit 2 before anything is created."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


def step(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("steps.train", ["--max-iter", "-3"], "max_iter must be a positive integer, got -3"),
        ("steps.train", ["--C", "abc"], "'abc' is not a valid float"),
        ("steps.train", ["--C", "0"], "C must be a positive number, got 0.0"),
        ("steps.train", ["--solver", "simplex"], "solver must be one of"),
        ("steps.train", ["--test-size", "1.5"], "test_size must be between 0 and 1"),
        ("steps.main", ["--max-iter", "x"], "'x' is not a valid integer"),
        ("steps.main", ["--min-accuracy", "-1"], "min_accuracy must be a non-negative number"),
        ("steps.evaluate", ["--model-uri", "runs:/abc/model"], "model URI must look like models:/<name>@<alias>"),
    ],
)
def test_bad_parameter_is_one_line_exit_2_and_creates_no_store(module, args, message, tmp_path):
    result = step(module, *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [next(l for l in result.stderr.splitlines() if l.startswith("error:"))]
    assert message in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_evaluate_of_a_version_that_does_not_exist_fails_in_one_line(tmp_path):
    result = step("steps.evaluate", "--model-uri", "models:/iris/99")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: no model version found for models:/iris/99"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "module", ["steps.main", "steps.validate_data", "steps.train", "steps.evaluate", "steps.retrain", "steps.cycle"]
)
def test_every_step_has_help(module):
    result = step(module, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


@pytest.mark.parametrize("flag", [["--strict"], ["--strict", "true"]])
def test_strict_validate_data_on_a_missing_csv_fails_in_one_line_before_any_run(flag, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "steps.validate_data", "--data-path", str(tmp_path / "missing.csv"), *flag],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: data check failed for {tmp_path / 'missing.csv'}: file not found: {tmp_path / 'missing.csv'} "
        "(strict: no fallback)"
    ]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_run_name_mlflow_made_up_is_recognised_and_a_chosen_one_is_not():
    from mlflow.utils.name_utils import _generate_random_name

    from steps.common.cli import is_generated_run_name

    assert all(is_generated_run_name(_generate_random_name()) for _ in range(50))
    for chosen in ("train", "nightly-retrain-3", "my-run", "", None, "nervous-gnat"):
        assert not is_generated_run_name(chosen)


def test_a_launched_run_in_default_gets_its_name_and_a_warning_naming_the_experiment_to_use(monkeypatch, caplog):
    """What `mlflow run .` without --experiment-name hands a step: a run with a made-up name in 'Default'."""
    import logging

    import mlflow
    from mlflow.utils.name_utils import _generate_random_name

    from steps.common.cli import step_run

    launched = mlflow.MlflowClient().create_run("0", run_name=_generate_random_name())
    monkeypatch.setenv("MLFLOW_RUN_ID", launched.info.run_id)
    with caplog.at_level(logging.WARNING, logger="steps.common.cli"), step_run("train", "iris-classification") as run:
        assert run.info.run_id == launched.info.run_id
    assert mlflow.get_run(launched.info.run_id).info.run_name == "train"
    assert [r.getMessage() for r in caplog.records] == [
        "This run is in MLflow's experiment 'Default': `mlflow run` was given no --experiment-name "
        "(use --experiment-name iris-classification)"
    ]


def test_parameters_mlflow_run_logged_as_typed_are_kept_and_the_others_logged():
    import mlflow

    from steps.common.cli import log_params

    with mlflow.start_run() as run:
        mlflow.log_params({"predictions": "logs/predictions.jsonl", "alpha": ".01"})
        log_params({"predictions": "/abs/logs/predictions.jsonl", "alpha": 0.01, "model_version": "2"})
    params = mlflow.get_run(run.info.run_id).data.params
    assert params == {"predictions": "logs/predictions.jsonl", "alpha": ".01", "model_version": "2"}
