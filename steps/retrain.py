"""Entry point ``retrain``: train on the base data plus the labeled production rows, then through the gate.

The base data is what ``train`` uses (the table checked against its contract; the Iris
table falls back to scikit-learn's copy when it fails a check). The production rows are
the logged predictions' features with the labels the feedback log holds for them (the
feedback log and its rotated files, joined with the prediction log and its rotated files),
checked against the same contract: rows that lack a feature, break a hard rule or carry a
label that names no class are counted by reason and left out
(``steps.monitoring.production_data``). The combined set is logged as the training run's
dataset input, whose source names the logs it came from, so a version's lineage shows which
production traffic trained it. Given the proxy's capture instead of
logs, the production rows are the labeled predictions of a window of it
(``steps.monitoring.capture_reading``), and the source names the capture and the window.

The new version is registered as challenger and evaluated by the existing gate
(``steps.evaluate``) on a held-out split that now holds labeled production rows too; the
champion is scored on the same rows. Runs: a parent ``retrain`` with nested ``train`` and
``evaluate`` runs, as ``main`` has.
"""

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd

from iris_core.contract import Tag
from iris_core.records import FEEDBACK_LOG_NAME, PREDICTION_LOG_NAME, all_logs
from steps.common import cli, options
from steps.common.config import GateThresholds, TableSpec, TrainConfig
from steps.evaluate import EvaluationResult, evaluate_version, raise_unless_passed, report
from steps.monitoring.capture_reading import read_capture
from steps.monitoring.capture_source import CaptureSource
from steps.monitoring.labels import locate, read_labels
from steps.monitoring.live_performance import LabeledRows, join
from steps.monitoring.production_data import ORIGIN, ProductionRows, production_rows, split_with_production
from steps.monitoring.window import WHOLE, Window
from steps.tables.checks import check_table
from steps.tables.loading import LoadedData, data_tags, load_dataset
from steps.train import TrainResult, fit_and_register
from steps.training.fitting import split

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainResult:
    production: ProductionRows
    trained: TrainResult
    evaluation: EvaluationResult


def labeled_production(
    predictions: str | Path, feedback: str | Path | None, model_name: str = "", window: Window = WHOLE
) -> LabeledRows:
    """Every label the feedback log and its rotated files hold, joined with the logged predictions; or, for a
    capture, the labels of the window's predictions of ``model_name``."""
    if feedback is None:
        return join([], [])
    if isinstance(predictions, str):
        sources = CaptureSource(predictions), CaptureSource(str(feedback))
        return read_capture(sources[0], model_name, window, feedback=sources[1]).labeled
    return read_labels(feedback, predictions, rotated=True)


def log_combined_dataset(
    base: LoadedData, combined: pd.DataFrame, predictions, feedback, window: Window = WHOLE
) -> None:
    """The training set as the run's dataset input; its source names the base data and the logs (or the capture)."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource

    sources = {"base": base.uri, "base_source": str(base.source)}
    if isinstance(predictions, str):  # a capture: where it is, and the window read
        sources.update({"capture": predictions, "feedback": str(feedback or ""), **window.params()})
    else:
        sources["predictions"] = [str(p.resolve()) for p in all_logs(predictions, PREDICTION_LOG_NAME)]
        sources["feedback"] = [str(p.resolve()) for p in all_logs(feedback, FEEDBACK_LOG_NAME)] if feedback else []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
        dataset = mlflow.data.from_pandas(
            combined, source=CodeDatasetSource(sources), targets=base.label, name=f"{base.name}+production"
        )
    mlflow.log_input(dataset, context="training")
    mlflow.set_tags(data_tags(base))


def train_with_production(
    base: LoadedData,
    production: ProductionRows,
    config: TrainConfig,
    model_name: str,
    predictions,
    feedback: str | Path | None,
    window: Window = WHOLE,
) -> TrainResult:
    """Inside the active run: split, log the combined set and what was left out, fit and register."""
    import mlflow

    train, holdout = split_with_production(base.frame, production.frame, config, base.label)
    combined = pd.concat([train, holdout], ignore_index=True)
    check_table(combined.drop(columns=[ORIGIN]), base.contract)  # the rows checked one by one also pass as a whole
    mlflow.log_params(
        {**config.params(), "predictions": str(predictions), "feedback": str(feedback) if feedback else ""}
    )
    if not window.whole:
        mlflow.log_params(window.params())
    log_combined_dataset(base, combined[[*base.features, base.label, ORIGIN]], predictions, feedback, window)
    mlflow.log_metrics(
        {
            "base_rows": len(base.frame),
            "production_rows": len(production.frame),
            "production_rows_rejected": production.rejected_rows,
            "production_labels_unmatched": production.unmatched,
            "production_holdout_rows": int((holdout[ORIGIN] != "base").sum()),
        }
    )
    if production.rejected:
        reasons = "; ".join(f"{reason}: {n}" for reason, n in production.rejected.most_common())
        mlflow.set_tag("production_rejected", reasons)
        _logger.warning("Left out %d labeled production rows (%s)", production.rejected_rows, reasons)
    tags = {Tag.DATA_SOURCE: base.source, Tag.PRODUCTION_ROWS: len(production.frame)}
    return fit_and_register(train, holdout, config, model_name, tags, base.contract)


def load_base(data: str | TableSpec | LoadedData, model_name: str, config: TrainConfig) -> LoadedData:
    """The base table, checked against its contract and its split checked too, before any run starts.

    ``data`` may be a path (the Iris contract for the model ``iris``), a ``TableSpec``, or a table loaded already.
    """
    if not isinstance(data, LoadedData):
        data = load_dataset(data if isinstance(data, TableSpec) else TableSpec(str(data), model_name=model_name))
    split(data.frame, config, data.label)
    return data


def retrain(
    client,
    data: str | TableSpec | LoadedData,
    predictions: str | Path,
    feedback: str | Path | None,
    config: TrainConfig,
    model_name: str,
    thresholds: GateThresholds,
    window: Window = WHOLE,
) -> RetrainResult:
    """Under the active run: a nested ``train`` on base plus production rows, then a nested ``evaluate``."""
    import mlflow

    base = load_base(data, model_name, config)
    production = production_rows(labeled_production(predictions, feedback, model_name, window), base.contract)
    _logger.info(
        "Production data: %d labeled rows to train on, %d left out, %d labels matching no logged prediction",
        len(production.frame),
        production.rejected_rows,
        production.unmatched,
    )
    with mlflow.start_run(run_name="train", nested=True):
        trained = train_with_production(base, production, config, model_name, predictions, feedback, window)
    with mlflow.start_run(run_name="evaluate", nested=True):
        evaluation = evaluate_version(client, model_name, trained.version, trained.holdout, thresholds)
    mlflow.set_tags(
        {
            Tag.MODEL_URI: trained.model_uri,
            Tag.TRAINING_RUN_ID: trained.run_id,
            Tag.GATE_DECISION: evaluation.decision.verdict,
        }
    )
    return RetrainResult(production, trained, evaluation)


def summary(result: RetrainResult) -> list[str]:
    production = result.production
    left_out = f", {production.rejected_rows} left out by the data rules" if production.rejected_rows else ""
    return [
        f"trained {result.trained.model_uri} on the base data and {len(production.frame)} labeled production rows"
        f"{left_out} ({production.unmatched} labels matched no logged prediction)",
        report(result.evaluation),
    ]


@click.command(
    help="Retrain on the base data plus the labeled production rows (prediction log + feedback log), register "
    "the version as 'challenger' and promote it to 'champion' only through the gate."
)
@options.table
@options.live_traffic
@options.training
@options.model_name
@options.gate
def main(data_path, label, contract, config, model_name, gate_thresholds, **traffic):
    spec = TableSpec(data_path, label, model_name, contract).validated()
    window, predictions, feedback = locate(**traffic)
    base = load_base(spec, model_name, config)  # a table that fails a check stops the step before its run starts
    import mlflow

    with cli.step_run("retrain"):
        result = retrain(
            mlflow.MlflowClient(), base, predictions, feedback, config, model_name, gate_thresholds, window
        )
    for line in summary(result):
        click.echo(line)
    raise_unless_passed(result.evaluation)


if __name__ == "__main__":
    cli.run(main)
