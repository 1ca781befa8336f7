"""The ``monitor`` step with ``--feedback``: labels joined with logged predictions, live accuracy and its verdict."""

import io

import pandas as pd
import pytest
from click.testing import CliRunner

from iris_core.contract import HOLDOUT_SPLIT_ARTIFACT
from iris_core.table.iris import IRIS
from steps.common.errors import InvalidParameter, PerformanceDropped
from steps.monitor import LIVE_CONFUSION_ARTIFACT, REPORT_ARTIFACT, main
from tests.helpers.tracking import monitoring_runs
from tests.helpers.traffic import write_labels, write_log

FEATURES, LABEL = IRIS.feature_names, IRIS.label


def labeled_traffic(registry, version: str, repeat: int = 2) -> pd.DataFrame:
    """The version's held-out rows (``repeat`` times over), scored by it, with their true species."""
    import mlflow

    run_id = registry.client().get_model_version("iris", version).run_id
    holdout = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/{HOLDOUT_SPLIT_ARTIFACT}")))
    rows = pd.concat([holdout] * repeat, ignore_index=True)
    out = mlflow.pyfunc.load_model(f"models:/iris/{version}").predict(rows[list(FEATURES)])
    return rows.assign(prediction=out["prediction"].to_numpy(), confidence=out["confidence"].to_numpy())


def run_monitor(*args):
    return CliRunner().invoke(main, list(args))


def test_true_labels_give_live_accuracy_per_class_scores_a_confusion_matrix_and_no_performance_drop(registry, tmp_path):
    traffic = labeled_traffic(registry, "2")
    log = write_log(tmp_path / "predictions.jsonl", traffic, model_version="2")
    labels = [(f"req-{i}", 0, species) for i, species in enumerate(traffic[LABEL])]
    feedback = write_labels(
        tmp_path / "feedback.jsonl", labels + [("req-0", 0, "virginica"), ("never-logged", 0, "setosa")]
    )
    result = run_monitor("--predictions", str(log), "--feedback", str(feedback))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "iris version 2: no_drift (60 rows)"
    assert lines[1].startswith("  estimated accuracy from the logged confidences: 0.") and "(an estimate)" in lines[1]
    expected = (traffic["prediction"] == traffic[LABEL]).mean()
    assert lines[2] == f"iris version 2: no_performance_drop (live accuracy {expected:.4f}, 60 labeled rows)"
    client = registry.client()
    [run] = monitoring_runs(client)
    metrics = run.data.metrics
    assert metrics["labeled_rows"] == 60 and metrics["live_accuracy"] == pytest.approx(expected)
    assert (metrics["duplicate_labels"], metrics["unmatched_labels"], metrics["label_records"]) == (1, 1, 62)
    assert {
        f"live_{m}_{c}" for m in ("precision", "recall", "f1") for c in ("setosa", "versicolor", "virginica")
    } <= set(metrics)
    assert 0.5 < metrics["estimated_accuracy"] <= 1
    assert run.data.params["feedback"] == str(feedback) and run.data.params["min_live_accuracy"] == "0.85"
    assert LIVE_CONFUSION_ARTIFACT in {a.path for a in client.list_artifacts(run.info.run_id)}
    report = open(client.download_artifacts(run.info.run_id, REPORT_ARTIFACT)).read()
    assert "## Live performance: no_performance_drop" in report and "| true \\ predicted |" in report
    assert "Estimated accuracy (an estimate, not a measurement" in report
    tags = client.get_model_version("iris", "2").tags
    assert tags["performance_status"] == "no_performance_drop" and float(tags["live_accuracy"]) == pytest.approx(
        expected
    )
    assert tags["live_labeled_rows"] == "60"


def test_live_accuracy_below_the_floor_is_a_performance_drop_and_the_step_fails(registry, tmp_path):
    traffic = labeled_traffic(registry, "2")
    log = write_log(tmp_path / "predictions.jsonl", traffic, model_version="2")
    # the truth, for a population the model has not seen: every other row is a virginica it did not call one
    labels = [
        (f"req-{i}", 0, species if i % 2 else ("virginica" if predicted != "virginica" else "setosa"))
        for i, (species, predicted) in enumerate(zip(traffic[LABEL], traffic["prediction"]))
    ]
    feedback = write_labels(tmp_path / "feedback.jsonl", labels)
    result = run_monitor("--predictions", str(log), "--feedback", str(feedback))
    assert isinstance(result.exception, PerformanceDropped)
    assert "iris version 2: performance_drop (live accuracy 0." in result.stdout
    assert "< min_live_accuracy 0.85 on 60 labeled rows" in result.stdout
    client = registry.client()
    assert client.get_model_version("iris", "2").tags["performance_status"] == "performance_drop"
    [run] = monitoring_runs(client)
    assert run.data.metrics["performance_drop"] == 1 and run.data.tags["performance_status"] == "performance_drop"


def test_labels_of_other_versions_and_too_few_labels_give_no_performance_verdict(registry, tmp_path):
    traffic = labeled_traffic(registry, "2", repeat=1)
    log = write_log(tmp_path / "predictions.jsonl", traffic, model_version="2")
    write_log(log, labeled_traffic(registry, "1", repeat=1).head(5), model_version="1", prefix="v1")
    labels = [(f"req-{i}", 0, s) for i, s in enumerate(traffic[LABEL])] + [(f"v1-{i}", 0, "setosa") for i in range(5)]
    feedback = write_labels(tmp_path / "feedback.jsonl", labels)
    result = run_monitor("--predictions", str(log), "--feedback", str(feedback), "--min-labeled-rows", "31")
    assert result.exit_code == 0, result.output
    assert "iris version 2: insufficient_labels (" in result.stdout and "30 labeled rows)" in result.stdout
    assert "no verdict: at least 31 labeled rows needed" in result.stdout
    [run] = monitoring_runs(registry.client())
    assert run.data.metrics["other_version_labeled_rows"] == 5
    report = open(registry.client().download_artifacts(run.info.run_id, REPORT_ARTIFACT)).read()
    assert "labeled rows of other versions, not counted here (iris/1: 5)" in report


def test_a_late_label_finds_its_prediction_in_a_rotated_file(registry, tmp_path):
    traffic = labeled_traffic(registry, "2", repeat=1)
    log = tmp_path / "predictions.jsonl"
    write_log(tmp_path / "predictions.jsonl.1", traffic, model_version="2", prefix="monday")  # rotated away since
    write_log(log, traffic, model_version="2", prefix="tuesday")
    labels = [(f"monday-{i}", 0, s) for i, s in enumerate(traffic[LABEL])]
    feedback = write_labels(tmp_path / "feedback.jsonl", labels)
    result = run_monitor("--predictions", str(log), "--feedback", str(feedback), "--min-labeled-rows", "10")
    assert result.exit_code == 0, result.output
    [run] = monitoring_runs(registry.client())
    assert run.data.metrics["labeled_rows"] == 30 and run.data.metrics["unmatched_labels"] == 0


def test_a_feedback_log_that_does_not_exist_is_a_usage_error_before_any_run(registry, tmp_path):
    log = write_log(tmp_path / "predictions.jsonl", labeled_traffic(registry, "2", repeat=1))
    result = run_monitor("--predictions", str(log), "--feedback", str(tmp_path / "nope.jsonl"))
    assert isinstance(result.exception, InvalidParameter) and "does not exist" in str(result.exception)
    assert monitoring_runs(registry.client()) == []


def test_a_directory_stands_for_every_replicas_logs_and_labels_find_predictions_across_them(registry, tmp_path):
    traffic = labeled_traffic(registry, "2", repeat=1)
    logs = tmp_path / "logs"
    for pod, part in (("pod-a", traffic.head(15)), ("pod-b", traffic.tail(15))):
        (logs / pod).mkdir(parents=True)
        write_log(logs / pod / "predictions.jsonl", part, model_version="2", prefix=pod)
    # every label reached the other replica than the one that answered
    write_labels(logs / "pod-b" / "feedback.jsonl", [(f"pod-a-{i}", 0, s) for i, s in enumerate(traffic[LABEL][:15])])
    write_labels(logs / "pod-a" / "feedback.jsonl", [(f"pod-b-{i}", 0, s) for i, s in enumerate(traffic[LABEL][15:])])
    result = run_monitor("--predictions", str(logs), "--feedback", str(logs), "--min-labeled-rows", "10")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("iris version 2: no_drift (30 rows)")
    [run] = monitoring_runs(registry.client())
    assert run.data.metrics["labeled_rows"] == 30 and run.data.metrics["unmatched_labels"] == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run_monitor("--predictions", str(empty))
    assert isinstance(refused.exception, InvalidParameter) and "no predictions.jsonl in the directory" in str(
        refused.exception
    )
