"""The ``monitor`` step against a real registry, in process (as ``python -m steps.monitor`` and through ``mlflow run``: ``tests/integration/steps/test_monitor_step.py``)."""

from click.testing import CliRunner

from iris_core.table.iris import IRIS
from steps.monitor import PLOTS_DIR, REPORT_ARTIFACT, DriftDetected, main
from tests.helpers.tracking import monitoring_runs
from tests.helpers.traffic import served_traffic, write_log

FEATURES = IRIS.feature_names


def test_held_out_traffic_of_the_champion_is_no_drift_with_its_report_plots_and_tags(registry, tmp_path):
    log = write_log(tmp_path / "predictions.jsonl", served_traffic(registry, "2"), model_version="2")
    write_log(log, served_traffic(registry, "1", rows=5), model_version="1")
    result = CliRunner().invoke(main, ["--predictions", str(log)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("iris version 2: no_drift (30 rows)")
    client = registry.client()
    [run] = monitoring_runs(client)
    assert run.data.tags["drift_status"] == "no_drift" and run.data.tags["model_version"] == "2"
    assert run.data.metrics["live_rows"] == 30 and run.data.metrics["other_version_rows"] == 5
    assert run.data.metrics["drift_detected"] == 0
    assert {f"psi_{f}" for f in FEATURES} | {"class_mix_tvd", "mean_confidence"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {REPORT_ARTIFACT, PLOTS_DIR} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, PLOTS_DIR)}
    assert plots == {f"{PLOTS_DIR}/{f}.png" for f in FEATURES}
    report = client.download_artifacts(run.info.run_id, REPORT_ARTIFACT)
    text = open(report).read()
    assert text.startswith("# iris version 2: no_drift") and "iris/1: 5" in text
    tags = client.get_model_version("iris", "2").tags
    assert tags["drift_status"] == "no_drift" and tags["drift_run_id"] == run.info.run_id


def test_a_shifted_feature_is_drift_and_the_step_fails(registry, tmp_path):
    log = write_log(tmp_path / "predictions.jsonl", served_traffic(registry, "2", shift="sepal_width", rows=200))
    result = CliRunner().invoke(main, ["--predictions", str(log)])
    assert isinstance(result.exception, DriftDetected)
    assert "sepal_width: KS p-value" in result.stdout
    assert registry.client().get_model_version("iris", "2").tags["drift_status"] == "drift"


def test_version_checks_that_version_instead_of_the_alias(registry, tmp_path):
    log = write_log(tmp_path / "predictions.jsonl", served_traffic(registry, "1"), model_version="1")
    result = CliRunner().invoke(main, ["--predictions", str(log), "--version", "1"])
    assert result.exit_code == 0, result.output
    client = registry.client()
    assert client.get_model_version("iris", "1").tags["drift_status"] == "no_drift"
    assert "drift_status" not in client.get_model_version("iris", "2").tags
