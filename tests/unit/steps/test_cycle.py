"""``cycle`` and ``retrain`` in process against a real registry (the session's v1, v2 = champion, v3).

The traffic is real: rows scored by the registered version itself, logged in the proxy's
format, with their true labels in the feedback log. A new cultivar the pipeline never saw
(``tests.helpers.traffic.new_cultivar``) is what the champion gets wrong.
"""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from iris_core.contract import CYCLE_EXPERIMENT, RETRAIN_CLAIM_TAG, TRAINING_EXPERIMENT
from iris_core.table.iris import IRIS
from steps import cycle, retrain
from steps.common.errors import GateFailed
from tests.helpers.tracking import REPO, runs
from tests.helpers.traffic import holdout_of, new_cultivar, scored_by, write_labels, write_log

LABEL = IRIS.label


def served(tmp_path, version: str, rows: pd.DataFrame, prefix: str) -> tuple:
    """Log the rows as version ``version`` answered them, and their true labels; returns both paths."""
    scored = scored_by(f"models:/iris/{version}", rows)
    predictions = write_log(tmp_path / "predictions.jsonl", scored, model_version=version, prefix=prefix)
    labels = [(f"{prefix}-{i}", 0, species) for i, species in enumerate(rows[LABEL])]
    feedback = write_labels(tmp_path / "feedback.jsonl", labels)
    return predictions, feedback


def cycle_args(predictions, feedback, *extra):
    data = str(REPO / "data" / "iris.csv")
    return ["--predictions", str(predictions), "--feedback", str(feedback), "--data-path", data, *extra]


def test_a_cycle_that_finds_nothing_wrong_records_no_action_and_trains_nothing(registry, tmp_path):
    predictions, feedback = served(tmp_path, "2", pd.concat([holdout_of(registry, "2")] * 2), "ok")
    result = CliRunner().invoke(cycle.main, cycle_args(predictions, feedback))
    assert result.exit_code == 0, result.output
    assert "cycle: no_action: version 2: no_drift on 60 rows, no_performance_drop on 60 labeled rows" in result.stdout
    client = registry.client()
    [run] = runs(client, CYCLE_EXPERIMENT, cycle_decision="no_action")
    assert run.data.tags["model_version"] == "2"
    assert len(client.search_model_versions("name = 'iris'")) == 3
    assert RETRAIN_CLAIM_TAG not in client.get_registered_model("iris").tags


def test_a_performance_drop_retrains_on_production_rows_the_gate_promotes_and_the_next_cycle_cools_down(
    registry, tmp_path
):
    traffic = pd.concat([holdout_of(registry, "2").head(20), new_cultivar(60, seed=1)], ignore_index=True)
    predictions, feedback = served(tmp_path, "2", traffic, "shop")
    result = CliRunner().invoke(cycle.main, cycle_args(predictions, feedback))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "iris version 2: performance_drop (live accuracy 0.25" in out
    assert "trained models:/iris/4 on the base data and 80 labeled production rows" in out
    assert "iris version 4: gate passed" in out and "@champion -> version 4 (was 2)" in out
    assert "on the 16 labeled production rows held out: accuracy 1.0000 vs champion 0.1875" in out
    assert out.splitlines()[-1] == (
        "cycle: retrained: version 2: performance_drop: live accuracy 0.2500 < min_live_accuracy 0.85 on 80 labeled "
        "rows; drift: sepal_length, sepal_width, petal_length, petal_width, predicted-class mix; "
        "retrained into version 4, promoted"
    )

    client = registry.client()
    assert client.get_registered_model("iris").aliases["champion"] == 4
    [run] = runs(client, CYCLE_EXPERIMENT, cycle_decision="retrained")
    assert (run.data.tags["retrained_version"], run.data.tags["gate_decision"]) == ("4", "passed")
    assert run.data.metrics["needs_review"] == 0
    version = client.get_model_version("iris", "4")
    assert version.tags["production_rows"] == "80"
    training = client.get_run(version.tags["training_run_id"])
    assert training.info.experiment_id == run.info.experiment_id
    [dataset] = training.inputs.dataset_inputs
    source = json.loads(dataset.dataset.source)["tags"]
    assert source["predictions"] == [str(predictions)] and source["feedback"] == [str(feedback)]
    assert dataset.dataset.name == "iris+production" and source["base"].endswith("iris.csv")
    assert training.data.metrics["production_rows"] == 80 and training.data.metrics["production_holdout_rows"] == 16
    evaluation = client.get_run(version.tags["evaluation_run_id"])
    assert evaluation.data.metrics["production_accuracy"] == 1.0
    assert evaluation.data.metrics["champion_production_accuracy"] == 0.1875
    assert evaluation.data.metrics["accuracy_score"] > evaluation.data.metrics["champion_accuracy"]
    claim = json.loads(client.get_registered_model("iris").tags[RETRAIN_CLAIM_TAG])
    assert (claim["run_id"], claim["version"]) == (run.info.run_id, "4")

    # version 4 now serves, and its traffic drifts far: a retrain would be due, but one just ran
    shifted = holdout_of(registry, "2").sample(200, replace=True, random_state=0)
    shifted["petal_length"] += 3.0
    write_log(predictions, scored_by("models:/iris/4", shifted), model_version="4", prefix="later")
    cooled = CliRunner().invoke(cycle.main, cycle_args(predictions, feedback))
    assert cooled.exit_code == 0, cooled.output
    assert "cycle: skipped: version 4: drift: " in cooled.stdout and "petal_length" in cooled.stdout
    assert (
        f"not retrained: a retrain ran within cooldown_hours 24: cycle run {run.info.run_id} claimed it"
        in cooled.stdout
    )
    assert len(client.search_model_versions("name = 'iris'")) == 4
    assert runs(client, CYCLE_EXPERIMENT, cycle_decision="skipped")


def test_a_retrain_whose_version_fails_the_gate_exits_1_and_keeps_the_champion(registry, tmp_path):
    traffic = pd.concat([holdout_of(registry, "2").head(20), new_cultivar(60, seed=3)], ignore_index=True)
    predictions, feedback = served(tmp_path, "2", traffic, "strict")
    # a floor no version meets, the champion included, and no promotion below it (below_floor_alpha 0)
    forced = ("--min-accuracy", "1.01", "--below-floor-alpha", "0")
    result = CliRunner().invoke(cycle.main, cycle_args(predictions, feedback, *forced))
    assert isinstance(result.exception, GateFailed)
    assert "gate failed" in result.stdout and "cycle: retrained:" in result.stdout
    client = registry.client()
    assert client.get_registered_model("iris").aliases["champion"] == 2
    [run] = runs(client, CYCLE_EXPERIMENT, cycle_decision="retrained")
    assert run.data.tags["gate_decision"] == "failed" and run.data.metrics["needs_review"] == 1


def test_retrain_counts_and_leaves_out_labeled_rows_that_break_the_data_rules(registry, tmp_path):
    rows = new_cultivar(40, seed=4)
    rows.loc[:4, "petal_width"] = -1.0  # not a measurement: the proxy would have refused them
    rows.loc[5:6, "sepal_length"] = 2e6
    scored = rows.assign(prediction="versicolor", confidence=0.7)
    predictions = write_log(tmp_path / "predictions.jsonl", scored, model_version="2", prefix="bad")
    # a week's labels: the older half already rotated away to feedback.jsonl.1
    write_labels(tmp_path / "feedback.jsonl.1", [(f"bad-{i}", 0, "setosa") for i in range(20)])
    feedback = write_labels(tmp_path / "feedback.jsonl", [(f"bad-{i}", 0, "setosa") for i in range(20, 40)])
    result = CliRunner().invoke(
        retrain.main, ["--predictions", str(predictions), "--feedback", str(feedback)], catch_exceptions=False
    )
    assert "33 labeled production rows, 7 left out by the data rules" in result.stdout
    client = registry.client()
    version = client.get_model_version("iris", "4")
    training = client.get_run(version.tags["training_run_id"])
    assert training.data.metrics["production_rows_rejected"] == 7
    assert training.data.tags["production_rejected"] == (
        "petal_width is not > 0 and <= 1e+06: 5; sepal_length is not > 0 and <= 1e+06: 2"
    )
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT).experiment_id
    [parent] = client.search_runs([experiment], "attributes.run_name = 'retrain'")
    assert parent.data.tags["model_uri"] == "models:/iris/4"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cooldown-hours", "-1"], "cooldown_hours must be a non-negative number"),
        (["--min-live-accuracy", "2"], "min_live_accuracy must be between 0 and 1"),
        (["--min-labeled-rows", "0"], "min_labeled_rows must be at least 1"),
    ],
)
def test_bad_cycle_parameters_are_refused_before_anything_runs(registry, tmp_path, args, message):
    predictions, feedback = served(tmp_path, "2", holdout_of(registry, "2").head(3), "p")
    result = CliRunner().invoke(cycle.main, cycle_args(predictions, feedback, *args))
    assert message in str(result.exception)
    assert runs(registry.client(), CYCLE_EXPERIMENT) == []
