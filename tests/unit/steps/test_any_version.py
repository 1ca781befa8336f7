"""Every step reads the version's own contract: a plain MLflow model, a binary table, a champion with other features."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from steps import evaluate, monitor
from steps.batch.job import BatchJob
from steps.batch_predict import run_job
from steps.common.config import GateThresholds, TableSpec, TrainConfig
from steps.common.errors import DataValidationError
from steps.main import run_pipeline
from steps.registry.versions import answer_classes, read_version
from tests.helpers.tables import (
    CANCER_LABEL,
    SLASHED,
    SPACED,
    WINE_LABEL,
    wine_features,
    wine_frame,
    write_breast_cancer,
    write_wine,
)
from tests.helpers.tracking import REPO
from tests.helpers.traffic import write_labels, write_log

PLAIN = "models:/wine_plain/1"


def plain_answers(rows: pd.DataFrame) -> list[str]:
    import mlflow

    return answer_classes(mlflow.pyfunc.load_model(PLAIN).predict(rows[wine_features()]))


def test_a_plain_model_is_evaluated_on_the_table_given_against_its_signatures_contract(wine):
    result = CliRunner().invoke(
        evaluate.main, ["--model-uri", PLAIN, "--data-path", str(wine.csv), "--label", WINE_LABEL]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wine_plain version 1: gate passed\n  - accuracy 1.0000 >= min_accuracy 0.9")
    tags = wine.client().get_model_version("wine_plain", "1").tags
    assert tags["gate_decision"] == "passed" and tags["eval_accuracy"] == "1.000000"
    evaluation = wine.client().get_run(tags["evaluation_run_id"])
    assert evaluation.data.metrics["accuracy_score"] == 1.0


def test_a_plain_model_given_a_table_without_its_features_is_refused_in_one_line(wine):
    iris = str(REPO / "data" / "iris.csv")
    with pytest.raises(DataValidationError) as refused:
        CliRunner().invoke(evaluate.main, ["--model-uri", PLAIN, "--data-path", iris], catch_exceptions=False)
    assert str(refused.value) == (
        f"data check failed for {iris}: the table has no column 'alcohol', 'malic acid', 'ash', "
        "'alcalinity_of_ash', 'magnesium', ..., which the model reads"
    )


def test_a_plain_model_is_batch_scored_into_mlflows_prediction_column_and_its_rules_reject_rows(wine, tmp_path):
    import mlflow

    rows = wine_frame().drop(columns=[WINE_LABEL]).assign(id=lambda f: [f"w{i}" for i in range(len(f))])
    rows = rows.astype({"ash": object})
    rows.loc[5, "ash"] = "salty"
    rows.to_csv(tmp_path / "in.csv", index=False)
    with mlflow.start_run():
        tally = run_job(
            BatchJob(str(tmp_path / "in.csv"), "out.csv", model_uri="models:/wine_plain@champion").validated()
        )
    out = pd.read_csv("out.csv", dtype={"prediction": str})
    assert list(out.columns) == [*rows.columns, "prediction"]
    good = wine_frame().drop(index=5).reset_index(drop=True)
    assert out["prediction"].tolist() == plain_answers(good)
    rejects = pd.read_csv("out.rejects.csv")
    assert rejects["reject_reason"].tolist() == ["ash: must be a number, got a string"]
    assert (tally.rows_scored, tally.rows_rejected) == (len(good), 1)
    assert tally.class_mix() == {c: plain_answers(good).count(c) for c in ("0", "1", "2")}


def test_a_plain_model_is_monitored_against_the_table_given_with_null_confidences(wine, tmp_path):
    rows = wine_frame().sample(120, replace=True, random_state=0).reset_index(drop=True)
    scored = rows.assign(prediction=plain_answers(rows), confidence=None)
    log = write_log(tmp_path / "predictions.jsonl", scored, "1", "wine_plain", features=wine_features())
    with open(log, "a") as lines:  # a row logged without one of the version's features
        lines.write(
            json.dumps(
                {
                    "model_name": "wine_plain",
                    "model_version": "1",
                    "features": {"hue": 1.0},
                    "prediction": "1",
                    "confidence": None,
                }
            )
            + "\n"
        )
    args = ["--predictions", str(log), "--model-name", "wine_plain", "--data-path", str(wine.csv), "--label", "class"]
    result = CliRunner().invoke(monitor.main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wine_plain version 1: no_drift (120 rows)")
    assert "estimated accuracy" not in result.stdout
    client = wine.client()
    [run] = client.search_runs([client.get_experiment_by_name("iris-monitoring").experiment_id])
    assert run.data.metrics["incomplete_rows"] == 1 and "mean_confidence" not in run.data.metrics
    assert f"psi_{SLASHED}" in run.data.metrics and f"ks_pvalue_{SPACED}" in run.data.metrics
    report = open(client.download_artifacts(run.info.run_id, "drift_report.md")).read()
    assert f"reference: the table `{wine.csv}` (178 rows)" in report
    assert "without one of its features, left out: 1" in report and "Mean confidence: n/a" in report


def test_monitor_of_a_wine_version_reports_soft_bounds_and_leaves_out_labels_that_name_no_class(wine, tmp_path):
    import mlflow

    rows = wine_frame().sample(60, replace=True, random_state=1).reset_index(drop=True)
    rows.loc[:5, "proline"] = 5000.0  # far beyond what training saw: reported, never refused
    out = mlflow.pyfunc.load_model("models:/wine/1").predict(rows[wine_features()])
    scored = rows.assign(prediction=out["prediction"].to_numpy(), confidence=out["confidence"].to_numpy())
    log = write_log(tmp_path / "predictions.jsonl", scored, "1", "wine", prefix="w", features=wine_features())
    labels = [(f"w-{i}", 0, str(label)) for i, label in enumerate(rows[WINE_LABEL])]
    labels[0] = ("w-0", 0, "merlot")
    feedback = write_labels(tmp_path / "feedback.jsonl", labels)
    args = ["--predictions", str(log), "--feedback", str(feedback), "--model-name", "wine", "--min-labeled-rows", "10"]
    result = CliRunner().invoke(monitor.main, args)
    client = wine.client()
    [run] = client.search_runs([client.get_experiment_by_name("iris-monitoring").experiment_id])
    metrics = run.data.metrics
    assert metrics["outside_observed_proline"] == pytest.approx(6 / 60) and metrics["outside_observed_hue"] == 0
    assert metrics["unknown_class_labels"] == 1 and metrics["labeled_rows"] == 59
    assert {"live_f1_0", "live_f1_1", "live_f1_2"} <= set(metrics)
    report = open(client.download_artifacts(run.info.run_id, "drift_report.md")).read()
    low, high = next(f.observed for f in read_version("models:/wine/1").contract.features if f.name == "proline")
    assert f"| proline | {low:g} | {high:g} | 10.0% |" in report
    assert "1 naming no class of the version left out" in report
    assert result.exit_code == 0, result.output


def test_a_binary_table_with_integer_labels_trains_and_passes_the_gate(tmp_path):
    import mlflow

    csv = write_breast_cancer(tmp_path / "cancer.csv")
    mlflow.set_experiment("iris-classification")
    with mlflow.start_run():
        result = run_pipeline(
            TableSpec(str(csv), CANCER_LABEL, "cancer"), TrainConfig(max_iter=500), "cancer", GateThresholds()
        )
    assert result.decision.passed and result.promoted and result.metrics["accuracy"] > 0.95
    assert {"f1_0", "f1_1"} <= set(result.metrics)
    contract = read_version("models:/cancer@champion").contract
    assert contract.classes == ("0", "1") and len(contract.features) == 30
    answer = mlflow.pyfunc.load_model("models:/cancer/1").predict(
        pd.DataFrame([contract.readiness.row], columns=contract.feature_names)
    )
    assert answer["prediction"].tolist() == [contract.readiness.answer]
    assert set(answer["confidence_scores"][0]) == {"0", "1"}


def test_a_champion_that_reads_other_features_is_not_compared_and_the_gate_says_why(wine, tmp_path):
    import mlflow

    csv = write_wine(tmp_path / "wine.csv", lambda f: f.drop(columns=["ash"]))
    mlflow.set_experiment("iris-classification")
    with mlflow.start_run():
        result = run_pipeline(TableSpec(str(csv), WINE_LABEL, "wine"), TrainConfig(), "wine", GateThresholds())
    assert result.version == "2" and result.champion_version == "1" and result.promoted
    assert (
        result.decision.reasons[-1] == "not compared with champion version 1: it reads 'ash' that this version does not"
    )
    evaluation = wine.client().get_run(wine.client().get_model_version("wine", "2").tags["evaluation_run_id"])
    assert "champion_accuracy" not in evaluation.data.metrics


def test_the_gate_compares_with_a_champion_on_the_same_rows_when_it_reads_the_same_features(wine):
    import mlflow

    mlflow.set_experiment("iris-classification")
    with mlflow.start_run():
        result = run_pipeline(
            TableSpec(str(wine.csv), WINE_LABEL, "wine"), TrainConfig(C=0.5), "wine", GateThresholds()
        )
    assert result.champion_version == "1"
    assert any(reason.startswith("accuracy") and "vs champion" in reason for reason in result.decision.reasons)
    assert not any("not compared" in reason for reason in result.decision.reasons)
    assert np.isfinite(result.metrics["f1_score"])


@pytest.fixture
def counts_store(plain_registry, tmp_path, tracking_store):
    """This test's copy of the plain models' store (``tests.helpers.plain_models``)."""
    import shutil

    shutil.copyfile(plain_registry / "mlflow.db", tmp_path / "mlflow.db")
    return tmp_path


def test_a_plain_model_whose_signature_says_long_is_evaluated_and_batch_scored_with_integers(counts_store):
    """``counts`` reads iris in whole millimetres: its signature's inputs are long, so fractions are refused."""
    import mlflow

    from tests.helpers.plain_models import COUNTS, iris_frame

    features, target = iris_frame()
    table = (features * 10).round().astype("int64").set_axis(["sl", "sw", "pl", "pw"], axis=1)
    table.assign(target=target).to_csv("counts.csv", index=False)
    result = CliRunner().invoke(
        evaluate.main, ["--model-uri", f"models:/{COUNTS}/1", "--data-path", "counts.csv", "--label", "target"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{COUNTS} version 1: gate passed")
    batch = table.head(4).astype({"pl": float})
    batch.loc[1, "pl"] = 14.5
    batch.to_csv("in.csv", index=False)
    with mlflow.start_run():
        tally = run_job(BatchJob("in.csv", "out.csv", model_uri=f"models:/{COUNTS}@champion").validated())
    assert (tally.rows_scored, tally.rows_rejected) == (3, 1)
    assert pd.read_csv("out.rejects.csv")["reject_reason"].tolist() == ["pl: must be an integer, got 14.5"]
    expected = mlflow.pyfunc.load_model(f"models:/{COUNTS}/1").predict(table.head(4).drop(index=1))
    assert pd.read_csv("out.csv", dtype={"prediction": str})["prediction"].tolist() == [str(v) for v in expected]
