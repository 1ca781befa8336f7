"""``python -m steps.batch_predict`` and ``mlflow run . -e batch_predict``: one-line errors, real runs."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers.batch_files import read_any, write_csv
from tests.helpers.tracking import REPO, mlflow_run


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
    result = mlflow_run(
        "batch_predict",
        *(f"input={data.path}", f"output={tmp_path / 'scores.parquet'}", "chunk_size=400"),
        cwd=tmp_path,
        options=("--experiment-name", "iris-batch-scoring"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "scored 1200 of 1211 rows (pandas engine)" in result.stdout
    assert len(read_any(tmp_path / "scores.parquet")) == 1200
    assert len(read_any(tmp_path / "scores.rejects.parquet")) == 11
    (run,) = mlflow.search_runs(experiment_names=["iris-batch-scoring"], output_format="list")
    assert run.data.metrics["rows_rejected"] == 11
    assert run.data.params["engine"] == "pandas"
    assert run.data.tags["rejects_path"] == str(tmp_path / "scores.rejects.parquet")


def batch_runs() -> list:
    import mlflow

    return mlflow.search_runs(experiment_names=["iris-batch-scoring"], output_format="list")


def test_a_missing_input_is_refused_before_mlflow_pandas_or_the_model_is_loaded(registry, tmp_path):
    missing = tmp_path / "nowhere.csv"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "steps.batch_predict", "--input", str(missing)]
        + ["--output", str(tmp_path / "out.csv"), "--model-uri", "models:/iris@nobody"],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: input not found or not a file: {missing}"
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import")}
    assert not imported & {"mlflow", "pandas", "pyarrow", "numpy"}
    assert batch_runs() == []


def test_an_existing_output_is_left_alone_unless_overwrite_is_given(registry, tmp_path):
    data = write_csv(tmp_path / "in.csv", 50)
    output = tmp_path / "out.csv"
    output.write_text("earlier results\n")
    args = ("--input", str(data.path), "--output", str(output))
    result = batch_predict(*args)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {output} already exists; pass --overwrite (mlflow run: -P overwrite=true) to replace it"
    )
    assert output.read_text() == "earlier results\n"
    assert not (tmp_path / "out.rejects.csv").exists() and batch_runs() == []
    assert batch_predict(*args, "--overwrite").returncode == 0
    assert len(read_any(output)) == 50
    result = batch_predict(*args)
    assert result.returncode == 1 and "out.rejects.csv already exist; pass --overwrite" in result.stderr
    assert batch_predict(*args, "--overwrite", "true").returncode == 0


def test_the_timing_line_of_a_small_file_shows_its_milliseconds(registry, tmp_path):
    data = write_csv(tmp_path / "in.csv", 5)
    result = batch_predict("--input", str(data.path), "--output", str(tmp_path / "out.csv"))
    took = re.search(r"^took (\S+) s to check, score and write \(([\d,]+) rows/s\)$", result.stdout, re.MULTILINE)
    assert took, result.stdout
    assert float(took.group(1)) > 0 and len(took.group(1).replace(".", "").lstrip("0")) == 3  # significant digits


def test_without_a_terminal_progress_is_plain_log_lines(registry, tmp_path):
    data = write_csv(tmp_path / "in.csv", 300)
    result = batch_predict("--input", str(data.path), "--output", str(tmp_path / "out.csv"), "--chunk-size", "10")
    assert result.returncode == 0
    assert "\r" not in result.stderr and "[#" not in result.stderr and "scoring [" not in result.stderr


def test_in_a_terminal_progress_is_one_bar_drawn_in_place(registry, tmp_path):
    import pty

    data = write_csv(tmp_path / "in.csv", 300)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "steps.batch_predict", "--input", str(data.path)]
        + ["--output", str(tmp_path / "out.csv"), "--chunk-size", "10"],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closes with the process
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(controller)
    bar = [line for line in seen.decode().split("\r") if line.startswith("scoring [")]
    assert bar and re.match(r"scoring \[#{24}\] 100% \(304 rows, [\d.]+ s\)", bar[-1].strip()), bar[-1:]
    assert any(re.match(r"scoring \[#*-+\] \d\d?% ", line) for line in bar)  # drawn while it moved


@pytest.mark.slow
def test_mlflow_run_refuses_to_replace_an_output_until_overwrite_is_true(registry, tmp_path):
    data = write_csv(tmp_path / "in.csv", 100)
    output = tmp_path / "scores.csv"
    output.write_text("earlier results\n")

    def run(*params: str):
        return mlflow_run("batch_predict", f"input={data.path}", f"output={output}", *params, cwd=tmp_path)

    refused = run()
    assert refused.returncode != 0
    assert f"error: {output} already exists; pass --overwrite (mlflow run: -P overwrite=true)" in refused.stderr
    assert output.read_text() == "earlier results\n"
    replaced = run("overwrite=true")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert len(read_any(output)) == 100
