"""The wine table through the real ``mlflow run`` of every entry point, as a user would type it.

``-P data_path=... -P label=class -P model_name=wine``: main, evaluate, validate_data,
train; monitor, retrain and cycle on a prediction and feedback log in the proxy's format;
batch scoring with both engines. Feature names hold a space and a slash. A broken wine
table is refused with one error line and nothing registered.
"""

import pandas as pd
import pytest

from iris_core.contract import MONITORING_EXPERIMENT, TRAINING_EXPERIMENT
from tests.helpers.tables import SLASHED, SPACED, WINE_LABEL, wine_features, wine_frame, write_wine
from tests.helpers.tracking import REPO, mlflow_cli, sqlite_uri
from tests.helpers.traffic import write_labels, write_log

pytestmark = pytest.mark.slow

WINE = ("-P", f"label={WINE_LABEL}", "-P", "model_name=wine")


def run(store, entry: str, *params: str, experiment: str = TRAINING_EXPERIMENT):
    return mlflow_cli(
        "run",
        str(REPO),
        "-e",
        entry,
        "--env-manager",
        "local",
        "--experiment-name",
        experiment,
        *params,
        cwd=store,
        env={"MLFLOW_TRACKING_URI": sqlite_uri(store)},
    )


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def served(uri: str, rows: pd.DataFrame) -> pd.DataFrame:
    import mlflow

    out = mlflow.pyfunc.load_model(uri).predict(rows[wine_features()])
    return rows.reset_index(drop=True).assign(
        prediction=out["prediction"].to_numpy(), confidence=out["confidence"].to_numpy()
    )


def test_the_wine_table_runs_end_to_end_through_every_entry_point(tmp_path):
    from mlflow import MlflowClient

    csv = write_wine(tmp_path / "wine.csv")
    data = ("-P", f"data_path={csv}", *WINE)
    client = MlflowClient()

    main = run(tmp_path, "main", *data)
    assert main.returncode == 0, main.stderr[-2000:]
    assert "wine version 1: gate passed" in main.stdout and "@champion -> version 1 (was unset)" in main.stdout

    validated = run(tmp_path, "validate_data", *data)
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert validated.stdout.startswith(f"178 rows from csv ({csv}); 0=59, 1=71, 2=48")

    trained = run(tmp_path, "train", *data)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "registered models:/wine/2 as @challenger" in trained.stdout

    gated = run(tmp_path, "evaluate", "-P", "model_name=wine")
    assert gated.returncode == 0, gated.stderr[-2000:]
    assert "wine version 2: gate passed" in gated.stdout and "vs champion" in gated.stdout

    # live traffic of the champion: its held-out rows, then the slashed feature shifted far
    rows = wine_frame().sample(200, replace=True, random_state=3).reset_index(drop=True)
    rows[SLASHED] = rows[SLASHED] + 1.5 * rows[SLASHED].std()
    log = write_log(
        tmp_path / "predictions.jsonl", served("models:/wine/2", rows), "2", "wine", features=wine_features()
    )
    labels = [(f"req-{i}", 0, str(label)) for i, label in enumerate(rows[WINE_LABEL])]
    feedback = write_labels(tmp_path / "feedback.jsonl", labels)
    logs = ("-P", f"predictions={log}", "-P", f"feedback={feedback}")

    monitored = run(tmp_path, "monitor", *logs, "-P", "model_name=wine", experiment=MONITORING_EXPERIMENT)
    assert monitored.returncode == 1 and errors(monitored) == ["error: drift detected for wine version 2"]
    assert f"{SLASHED}: KS p-value" in monitored.stdout
    [check] = client.search_runs([client.get_experiment_by_name(MONITORING_EXPERIMENT).experiment_id])
    assert check.data.metrics[f"psi_{SLASHED}"] > 0.25 and f"mean_shift_{SPACED}" in check.data.metrics
    plots = {a.path for a in client.list_artifacts(check.info.run_id, "drift_plots")}
    assert {"drift_plots/od280_od315 of diluted wines.png", "drift_plots/malic acid.png"} <= plots
    assert len(plots) == 13

    cycled = run(tmp_path, "cycle", *data, *logs, experiment="iris-cycle")
    assert cycled.returncode == 0, cycled.stderr[-2000:]
    [decision] = [line for line in cycled.stdout.splitlines() if line.startswith("cycle: ")]
    assert decision.startswith(f"cycle: retrained: version 2: drift: {SLASHED}")
    assert decision.endswith("retrained into version 3, promoted")

    retrained = run(tmp_path, "retrain", *data, *logs)
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    assert "trained models:/wine/4 on the base data and 200 labeled production rows" in retrained.stdout
    assert "wine version 4: gate passed" in retrained.stdout
    training = client.get_run(client.get_model_version("wine", "4").tags["training_run_id"])
    assert [d.dataset.name for d in training.inputs.dataset_inputs] == ["wine+production"]
    assert training.data.metrics["production_rows"] == 200

    champion = client.get_registered_model("wine").aliases["champion"]
    for engine in ("pandas", "spark"):
        batch = run(
            tmp_path,
            "batch_predict",
            "-P",
            f"input={csv}",
            "-P",
            f"output={tmp_path / engine}.parquet",
            "-P",
            "model_uri=models:/wine@champion",
            "-P",
            f"engine={engine}",
            experiment="iris-batch-scoring",
        )
        assert batch.returncode == 0, batch.stderr[-2000:]
        assert batch.stdout.startswith(f"scored 178 of 178 rows ({engine} engine)")
    pandas_out = pd.read_parquet(tmp_path / "pandas.parquet")
    spark_out = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "spark.parquet").glob("part-*"))])
    expected = served(f"models:/wine/{champion}", wine_frame())["prediction"]
    assert pandas_out["prediction"].tolist() == expected.tolist()
    assert sorted(spark_out["prediction"].tolist()) == sorted(expected.tolist())
    assert set(pandas_out["confidence_scores"][0]) == {"0", "1", "2"}
    assert [c for c in pandas_out.columns if c in (SLASHED, SPACED)] == [SPACED, SLASHED]


def test_a_broken_wine_table_under_mlflow_run_is_one_error_line_and_registers_nothing(tmp_path):
    from mlflow import MlflowClient

    csv = write_wine(tmp_path / "wine.csv", lambda f: f.assign(hue=f["hue"].where(f.index != 9)))
    result = run(tmp_path, "main", "-P", f"data_path={csv}", *WINE)
    assert result.returncode == 1
    assert errors(result) == [f"error: data check failed for {csv}: null values in columns ['hue']"]
    assert "Traceback" not in result.stderr
    client = MlflowClient()
    assert client.search_registered_models() == []
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert all(r.info.status == "FAILED" and not r.data.metrics for r in runs)
