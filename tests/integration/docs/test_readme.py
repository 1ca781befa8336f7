"""The command lines of the README's Quickstart and of the manual's pages, run exactly as written, in a fresh clone.

The commands are read from README.md and docs/ themselves (``tests/helpers/readme.py``), so the next
slip on a page fails here. They run once, page after page in the order a new user follows
them, in a copy of the project's files with no tracking URI set (MLflow's default
``./mlflow.db``, as on a new user's machine); every test then reads what that one
walk-through did. A command shown in a ``console`` block must print what its page shows
(times, run IDs and the user name aside; ``...`` skips lines), and exit non-zero exactly
when the page shows an ``error:``; a ``bash`` block's command must exit 0.
"""

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests

from iris_core.alias_history import alias_history
from iris_core.contract import BATCH_EXPERIMENT, MONITORING_EXPERIMENT, TRAINING_EXPERIMENT
from iris_core.records import encode, make_feedback_record
from iris_core.table.iris import IRIS
from tests.helpers.readme import (
    DOCS,
    PROJECT_COMMANDS,
    README,
    Command,
    commands,
    comparable,
    fresh_clone,
    navigation,
    new_user_env,
    pages,
    printed_in_order,
    promised,
    section_text,
)
from tests.helpers.support import free_port, http_ok, stop_process, wait_until
from tests.helpers.tracking import REPO
from tests.helpers.traffic import write_log

CLASSES, FEATURES, LABEL = IRIS.classes, IRIS.feature_names, IRIS.label

pytestmark = pytest.mark.slow

# Pages whose commands a new user runs on a laptop, in this order, on one store: the README's
# Quickstart, then the manual's pages in the order of its navigation.
WALKED = (
    "README.md",
    "docs/pipeline.md",
    "docs/registry.md",
    "docs/rollout.md",
    "docs/monitoring.md",
    "docs/feedback.md",
    "docs/batch.md",
)
# Sections whose project commands are not walked here, and why: most need something a laptop
# does not have, and say where they are tested.
NOT_WALKED = {
    ("README.md", "A short tour"): (
        "each is a command of the page the tour links to, walked there"
        " (test_every_command_of_the_readme_tour_is_one_the_walkthrough_runs)"
    ),
    ("README.md", "Your own data and models"): (
        "it writes wine.csv first with a python -c line, which the walk-through does not run: "
        "tests/integration/docs/test_own_data_readme.py runs the section's lines as written"
    ),
    ("docs/own-data.md", "Train, gate and serve another table"): (
        "wine.csv, written by the page's python -c line: tests/integration/steps/test_wine_project.py runs these entry points "
        "with these parameters, tests/integration/serving/test_wine_served.py serves and monitors such a version"
    ),
    (
        "docs/own-data.md",
        "The table's contract",
    ): "a wine version: tests/unit/steps/training/test_training.py reads its contract",
    ("docs/own-data.md", "Writing a contract down to pin and tighten it"): (
        "a written wine contract: tests/integration/steps/test_wine_project.py and tests/unit/steps/data/test_table_checks.py train with one"
    ),
    ("docs/own-data.md", "Batch scoring, monitoring and the loop"): (
        "a proxy's logs of wine traffic: tests/integration/steps/test_wine_project.py runs batch_predict, monitor and cycle on wine"
    ),
    ("docs/own-data.md", "A model you trained yourself"): (
        "a plain MLflow model: tests/unit/steps/test_any_version.py evaluates, batch-scores and monitors one, "
        "tests/integration/serving/test_any_model.py serves them"
    ),
    ("docs/deployment.md", "Compose"): "the compose stack's tracking server (tests/unit/deploy checks the files)",
    ("docs/team.md", "On each client"): "a team tracking server (tests/integration/team runs these against one)",
    ("docs/feedback.md", "The loop, end to end"): (
        "a fresh clone of its own, a running proxy and a client's traffic (tests/integration/loop runs it)"
    ),
    ("docs/feedback.md", "Capture into MLflow's artifact store"): (
        "a tracking server with --serve-artifacts and a proxy capturing into it: tests/integration/loop/test_capture_page.py runs"
        " these lines as written, with the page's traffic, and compares what they print with the page"
    ),
    ("docs/rollout.md", "Canary steps, a bake window, and a rollback by itself"): (
        "a running proxy, a version on live traffic and clients: tests/integration/serving/test_delivery.py runs these lines as"
        " written, its version 3 being the pipeline's C=0.3 rather than the page's failing one"
    ),
    ("docs/rollout.md", "Setting it up"): (
        "a tracking server that sends webhooks and a proxy that takes them: tests/integration/serving/test_webhook_delivery.py"
        " runs webhook create, test, list and delete with python -m registry_tools against one, for its proxy's URL,"
        " and moves the alias through it"
    ),
    ("docs/rollout.md", "Shadow: evidence before promotion"): (
        "a running proxy shadowing a challenger: tests/integration/serving/test_shadow.py runs these lines as written"
    ),
}
COMMANDS = [c for page in WALKED for c in commands(REPO / page) if (c.page, c.section) not in NOT_WALKED]
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Ran:
    command: Command
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Walkthrough:
    clone: Path
    ran: list[Ran]

    def client(self):
        from mlflow import MlflowClient

        uri = f"sqlite:///{self.clone / 'mlflow.db'}"
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def type_in(command: Command, cwd: Path, env: dict) -> Ran:
    """Run the line through bash as a person types it; a prompt the README answers gets that answer on a terminal."""
    argv = ["bash", "-c", command.text]
    if command.answer is None:
        done = subprocess.run(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    else:
        controller, terminal = os.openpty()
        try:
            os.write(controller, f"{command.answer}\n".encode())
            done = subprocess.run(
                argv, cwd=cwd, env=env, stdin=terminal, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
            )
        finally:
            os.close(terminal)
            os.close(controller)
    return Ran(command, done.returncode, done.stdout, done.stderr)


def served_traffic(clone: Path) -> None:
    """What ``python -m serving --prediction-log logs/predictions.jsonl`` would have logged: Iris rows as served."""
    frame = pd.read_csv(clone / "data" / "iris.csv")
    scored = frame[list(FEATURES)].assign(prediction=frame[LABEL], confidence=0.95)
    (clone / "logs").mkdir(exist_ok=True)
    write_log(clone / "logs" / "predictions.jsonl", scored, model_version=None)


def labels_sent_back(clone: Path) -> None:
    """What ``POST /feedback`` would have logged to ``logs/feedback.jsonl``: the true class of each served row."""
    frame = pd.read_csv(clone / "data" / "iris.csv")
    with open(clone / "logs" / "feedback.jsonl", "wb") as log:
        for i, label in enumerate(frame[LABEL]):
            log.write(
                encode(make_feedback_record(ts="2026-01-01T01:00:00.000Z", request_id=f"req-{i}", row=0, label=label))
            )


# What a page's commands need that a running proxy would have written, made before its first command.
BEFORE_PAGE = {"docs/monitoring.md": served_traffic, "docs/feedback.md": labels_sent_back}


@pytest.fixture(scope="session")
def walkthrough(tmp_path_factory) -> Walkthrough:
    clone = fresh_clone(tmp_path_factory.mktemp("readme") / "iris-mlops")
    env = new_user_env()
    ran, prepared = [], set()
    for command in COMMANDS:
        if command.page in BEFORE_PAGE and command.page not in prepared:
            BEFORE_PAGE[command.page](clone)
            prepared.add(command.page)
        ran.append(type_in(command, clone, env))
    return Walkthrough(clone, ran)


def test_every_page_a_new_user_walks_through_has_commands_walked():
    assert [page for page in WALKED if any(c.page == page for c in COMMANDS)] == list(WALKED)
    assert [c.section for c in COMMANDS if c.page == "README.md"] == ["Quickstart"]


def test_the_walkthrough_follows_the_pages_in_the_order_of_the_manual():
    order = navigation()
    walked = [page.removeprefix("docs/") for page in WALKED[1:]]
    assert walked == sorted(walked, key=order.index)


def test_every_project_command_of_the_readme_and_the_manual_is_walked_or_tested_elsewhere():
    unaccounted = [
        str(c)
        for page in pages()
        for c in commands(page)
        if (c.page, c.section) not in NOT_WALKED and c.page not in WALKED
    ]
    assert unaccounted == []


def test_every_section_said_not_to_be_walked_has_commands():
    """A heading renamed or moved leaves its reason behind here: the reason must still name commands."""
    named = {(c.page, c.section) for page in pages() for c in commands(page)}
    assert set(NOT_WALKED) - named == set()


def test_every_command_of_the_readme_tour_is_one_the_walkthrough_runs():
    """The tour shows commands of the pages it links to, as written there, where they are walked."""
    tour = [c.text for c in commands(README) if c.section == "A short tour"]
    walked = {c.text for c in COMMANDS if c.page != "README.md"}
    assert tour and [text for text in tour if text not in walked] == []


@pytest.mark.parametrize(
    "index", range(len(COMMANDS)), ids=[f"{i:02d} {c.page} {c.text[:60]}" for i, c in enumerate(COMMANDS)]
)
def test_command_works_as_written(walkthrough, index):
    ran = walkthrough.ran[index]
    command = ran.command
    assert PROJECT_COMMANDS.match(command.text)
    failed = f"$ {command.text}\nexit {ran.returncode}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
    if command.shows_an_error:
        assert ran.returncode != 0, failed
    else:
        assert ran.returncode == 0, failed
    if command.shown is not None:
        expected = promised(command)
        actual = comparable(ran.stdout + "\n" + ran.stderr)
        assert printed_in_order(expected, actual), "\n".join([f"{command.page} shows:", *expected, "printed:", *actual])


# -- what the walk-through left behind ------------------------------------------------------------


def runs_of(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_every_run_is_in_the_experiment_its_page_names_and_named_for_what_it_is(walkthrough):
    client = walkthrough.client()
    assert client.search_runs(["0"]) == []  # nothing in MLflow's Default experiment
    training = runs_of(client, TRAINING_EXPERIMENT)
    parents = [r for r in training if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == [
        "evaluate",
        "pipeline",
        "pipeline",
        "retrain",
        "train",
        "validate_data",
    ]
    nested = {"pipeline": ["evaluate", "train", "validate_data"], "retrain": ["evaluate", "train"]}
    for parent in (r for r in parents if r.info.run_name in nested):
        children = [r for r in training if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.info.run_name for r in children) == nested[parent.info.run_name]
    assert [r.info.run_name for r in runs_of(client, MONITORING_EXPERIMENT)] == ["monitor", "monitor"]
    assert [r.info.run_name for r in runs_of(client, BATCH_EXPERIMENT)] == ["batch_predict", "batch_predict"]


def test_the_quickstart_pipeline_logs_params_metrics_artifacts_and_makes_version_1_champion(walkthrough):
    client = walkthrough.client()
    run = client.get_run(client.get_model_version("iris", "1").run_id)
    assert run.data.params == {
        "model_type": "LogisticRegression",
        "max_iter": "200",
        "C": "1.0",
        "solver": "lbfgs",
        "random_state": "42",
        "test_size": "0.2",
        "scaled": "False",  # Iris's features are on comparable scales: no scaler inside the model
    }
    for metric in ("accuracy", "precision", "recall", "f1_score", *(f"f1_{c}" for c in CLASSES)):
        assert 0.9 <= run.data.metrics[metric] <= 1.0, metric
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "classification_report.txt", "data", "table_contract.yaml"} <= artifacts
    assert run.data.tags["data_source"] == "csv"
    oldest = list(reversed(alias_history(client, "iris", "champion")))[:2]
    assert [(m.from_version, m.to_version, m.how) for m in oldest] == [(None, "1", "gate"), ("1", "2", "gate")]


def test_the_training_run_logs_the_dataset_input_with_source_and_digest(walkthrough):
    client = walkthrough.client()
    inputs = client.get_run(client.get_model_version("iris", "1").run_id).inputs.dataset_inputs
    dataset = next(i.dataset for i in inputs if any(t.value == "training" for t in i.tags))
    assert dataset.digest
    assert json.loads(dataset.source) == {"uri": (walkthrough.clone / "data" / "iris.csv").as_uri()}


def test_a_model_version_carries_its_signature_and_input_example(walkthrough):
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(f"sqlite:///{walkthrough.clone / 'mlflow.db'}")
    try:
        info = get_model_info("models:/iris/1")
    finally:
        mlflow.set_tracking_uri(None)
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(FEATURES)
    assert all(c["type"] == "double" for c in info.signature.inputs.to_dict())
    assert info.saved_input_example_info


def test_the_train_entry_point_logs_its_parameters_as_given_and_evaluate_promotes_the_version(walkthrough):
    client = walkthrough.client()
    version = client.get_model_version("iris", "2")
    run = client.get_run(version.run_id)
    assert run.info.run_name == "train"
    assert run.data.params["max_iter"] == "300" and run.data.params["C"] == "0.5"
    assert version.tags["gate_decision"] == "passed"


def test_the_failing_gate_leaves_its_reasons_on_the_version(walkthrough):
    tags = walkthrough.client().get_model_version("iris", "3").tags
    assert tags["gate_decision"] == "failed"
    assert "min_accuracy 1.01" in tags["gate_reasons"]


def test_the_monitor_commands_log_their_paths_as_typed_and_tag_the_version_they_checked(walkthrough):
    client = walkthrough.client()
    with_labels, without = runs_of(client, MONITORING_EXPERIMENT)  # newest first
    assert without.data.params["predictions"] == with_labels.data.params["predictions"] == "logs/predictions.jsonl"
    assert with_labels.data.params["feedback"] == "logs/feedback.jsonl"
    assert without.data.tags["drift_status"] == with_labels.data.tags["drift_status"] == "no_drift"
    assert with_labels.data.metrics["labeled_rows"] == 150 and with_labels.data.metrics["live_accuracy"] == 1.0
    checked = client.get_model_version("iris", with_labels.data.tags["model_version"])
    assert checked.tags["drift_run_id"] == with_labels.info.run_id


def test_batch_scoring_writes_the_files_its_page_names_with_every_row(walkthrough):
    scored = pd.read_csv(walkthrough.clone / "scores" / "iris-scores.csv")
    assert len(scored) == 150 and set(scored["prediction"]) == set(CLASSES)
    assert (walkthrough.clone / "scores" / "iris-scores.rejects.csv").exists()
    assert len(pd.read_parquet(walkthrough.clone / "scores" / "iris-scores-spark.parquet")) == 150


BATCH = DOCS / "batch.md"


def test_the_rejects_example_run_as_written_writes_the_rejects_file_it_shows(walkthrough):
    """The example input, the inline command and the rejects file under "Finding a reject in the input"."""
    section = section_text(BATCH, "Finding a reject in the input")
    source, shown = re.findall(r"```\n(.*?)```", section, re.S)
    command = re.search(r"`(python -m steps\.batch_predict --input [^`]+)`", section).group(1)
    (walkthrough.clone / "scores" / "new-flowers.csv").write_text(source)
    ran = type_in(
        Command("docs/batch.md", "Finding a reject in the input", command, None), walkthrough.clone, new_user_env()
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "scored 1 of " in ran.stdout, ran.stdout  # "scores one row"
    assert (walkthrough.clone / "scores" / "new-flowers-scored.rejects.csv").read_text() == shown


def test_the_batch_command_run_again_refuses_with_the_line_its_page_shows(walkthrough):
    [shown] = re.findall(r"```\n(error: .*?)\n```", section_text(BATCH, "Nothing is replaced unasked"))
    [first] = [c for c in COMMANDS if c.page == "docs/batch.md" and "-P output=scores/iris-scores.csv" in c.text]
    ran = type_in(first, walkthrough.clone, new_user_env())
    assert ran.returncode == 1
    assert shown in ran.stderr.splitlines(), ran.stderr[-2000:]


def test_models_serve_of_the_champion_answers_with_the_promised_shape(walkthrough):
    from serving.upstreams.servers import serve_command

    port = free_port()
    proc = subprocess.Popen(
        serve_command("models:/iris@champion", port),
        cwd=walkthrough.clone,
        env=new_user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), timeout=120, what="models serve")
        body = {"dataframe_split": {"columns": list(FEATURES), "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
    finally:
        stop_process(proc)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["prediction"] for p in predictions] == ["setosa", "virginica"]
    assert [p["prediction_index"] for p in predictions] == [0, 2]
    for p in predictions:
        assert set(p["confidence_scores"]) == set(CLASSES)
        assert p["confidence"] == max(p["confidence_scores"].values())
