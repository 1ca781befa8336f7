"""Entry point ``monitor``: does live traffic still look like the data the serving version was trained on?

Reads the proxy's prediction log (format in ``iris_core.records``) and compares the
rows served by one model version with that version's training split (the
``data/train.csv`` artifact of its training run), feature by feature of the version's
contract (``steps.registry.versions``). A version the pipeline did not train has no training split:
the table given with ``--data-path`` and ``--label``, checked against its contract, is its
reference instead. One run checks one version: by default the one holding ``alias``, the
version serving now. Rows of other versions are left out and counted (check them with
``--version N``), as are rows of the version that lack one of its features; rows that name
no registry version are taken as served by the checked one. The share of live rows outside
each feature's observed range in training (the contract's soft bounds) is reported too.

The statistics and the verdict are ``steps.monitoring.drift``; the report ``steps.monitoring.drift_report``. Drift
makes the status ``drift`` (exit 1, so a scheduler can trigger retraining);
otherwise ``no_drift`` (exit 0). With fewer than ``min_rows`` rows there is no verdict:
status ``insufficient_data``, exit 0, since too little traffic is not a failure. The
status is set as the ``drift_status`` tag of the model version and of the run, which
also holds the statistics as metrics, one PNG per feature and ``drift_report.md``.

``--predictions`` may name the proxy's capture instead (``--capture-uri``: Parquet files in
an artifact store, ``steps.monitoring.capture_reading``), of which it reads a window (``--since``,
``--until``, ``--hours``; ``steps.monitoring.window``): only the partitions the window meets.

With ``--feedback``, the labels of the feedback log (or of the capture) are joined with the predictions they
belong to (in the prediction log and its rotated files: labels come late) and the
version's live accuracy, per-class scores and confusion matrix join the report
(``steps.monitoring.live_performance``). Live accuracy below ``min_live_accuracy`` on at least
``min_labeled_rows`` labels is a ``performance_drop`` (exit 1), set as the
``performance_status`` tag; labels that name no class of the version are left out and
counted. Beside the drift checks, the accuracy the logged confidences promise is reported
as an estimate, labels or not (a model that logs no confidences gives none).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd

from iris_core.contract import MONITORING_EXPERIMENT, TRAIN_SPLIT_ARTIFACT, DriftStatus, PerformanceStatus, Tag
from iris_core.records import PREDICTION_LOG_NAME, current_logs, read_log
from iris_core.refs import CHAMPION, ModelRef, version_uri
from iris_core.resolver import Resolved, resolve
from iris_core.table.contract import TableContract
from steps.common import cli, options
from steps.common.config import DEFAULT_DATA_PATH, DEFAULT_LABEL, DriftThresholds, PerformanceThresholds
from steps.common.errors import DriftDetected, InvalidParameter, PerformanceDropped, StepError
from steps.monitoring.capture_reading import read_capture
from steps.monitoring.capture_source import CaptureSource
from steps.monitoring.drift import LIVE_COLUMNS, DriftAssessment, LiveRows, assess, live_rows
from steps.monitoring.drift_report import PLOTS_DIR as PLOTS_DIR  # where callers have always found it
from steps.monitoring.drift_report import REPORT_ARTIFACT, feature_figure, plot_paths, report, run_metrics
from steps.monitoring.labels import locate, read_labels
from steps.monitoring.live_performance import (
    LABEL_COLUMN,
    RECORD_COLUMNS,
    LabeledRows,
    LivePerformance,
    assess_performance,
    estimate_lines,
    estimated_accuracy,
    performance_lines,
    performance_metrics,
)
from steps.monitoring.window import WHOLE, Window
from steps.registry.versions import version_contract
from steps.training.classification import confusion_matrix_figure
from steps.training.splits import load_split, table_rows

_logger = logging.getLogger(__name__)

LIVE_CONFUSION_ARTIFACT = "live_confusion_matrix.png"


def resolve_version(client, model_name: str, alias: str, version: str | None) -> Resolved:
    """The version to check: ``version`` when given, else the one holding ``alias``.

    The resolver's errors say what is wrong: a model, alias or version that is not there
    (``NotFound``), or a registry that could not be asked (``RegistryUnavailable``: a wrong
    password, a server that does not answer); both end the step in one line, exit 1.
    """
    return resolve(client, ModelRef(model_name, version=version) if version else ModelRef(model_name, alias=alias))


def load_reference(run_id: str | None, label: str) -> pd.DataFrame | None:
    """The training split the version's training run logged; None when it logged none."""
    return load_split(run_id, TRAIN_SPLIT_ARTIFACT, label)


@dataclass(frozen=True)
class Reference:
    """What live traffic is compared with: the rows, their label column, and where they came from."""

    frame: pd.DataFrame
    label: str
    source: str  # for the report


def reference_rows(run_id: str | None, contract: TableContract, data_path: str, label: str) -> Reference:
    """The version's training split, else the table given, checked against the version's contract."""
    if contract.label:
        train = load_reference(run_id, contract.label)
        if train is not None:
            return Reference(train, contract.label, f"`{TRAIN_SPLIT_ARTIFACT}` of training run `{run_id}`")
    if not data_path:
        raise StepError("the version has no training split: give its reference table with --data-path and --label")
    frame = table_rows(data_path, label, contract)
    return Reference(frame, str(frame.columns[-1]), f"the table `{data_path}`")


def check_names(contract: TableContract) -> None:
    """A feature named like a field of the logs could not be told apart from it."""
    clashes = [name for name in contract.feature_names if name in {*LIVE_COLUMNS, *RECORD_COLUMNS}]
    if clashes:
        raise StepError(
            f"the version's feature {clashes[0]!r} has the name of a prediction-log field; monitoring cannot tell "
            "them apart"
        )


def read_predictions(path: str | Path, model_name: str, version: str, features: tuple[str, ...]) -> LiveRows:
    """The rows of the prediction log ``path`` names (every one beneath it, for a directory) served by the version."""
    if Path(path).is_dir() and not current_logs(path, PREDICTION_LOG_NAME):
        raise InvalidParameter(f"no {PREDICTION_LOG_NAME} in the directory {str(path)!r}")
    records, skipped = [], 0
    for log in current_logs(path, PREDICTION_LOG_NAME):
        try:
            contents = read_log(log)
        except OSError as exc:
            raise StepError(f"cannot read the prediction log {log}: {exc.strerror or exc}") from None
        if contents.skipped:
            _logger.warning(
                "Skipped %d unreadable lines of %s (first: %s)", contents.skipped, log, contents.first_skipped
            )
        records += contents.records
        skipped += contents.skipped
    return live_rows(records, model_name, version, features, skipped)


@dataclass(frozen=True)
class MonitorResult:
    """What one check of one version found: drift, and (with labels) live performance."""

    model_name: str
    version: str
    run_id: str
    assessment: DriftAssessment
    estimate: float | None
    performance: LivePerformance | None = None

    @property
    def drift(self) -> bool:
        return self.assessment.status == DriftStatus.DRIFT

    @property
    def performance_drop(self) -> bool:
        return self.performance is not None and self.performance.status == PerformanceStatus.PERFORMANCE_DROP

    def summary(self, thresholds: DriftThresholds, performance_thresholds: PerformanceThresholds) -> list[str]:
        """What the command line prints: each verdict and its reasons."""
        name = f"{self.model_name} version {self.version}"
        lines = [f"{name}: {self.assessment.status} ({self.assessment.rows} rows)"]
        lines += [f"  - {reason}" for reason in self.assessment.reasons(thresholds)]
        if self.assessment.status == DriftStatus.INSUFFICIENT_DATA:
            lines.append(f"  no verdict: at least {thresholds.min_rows} rows needed")
        if self.estimate is not None:
            lines.append(f"  estimated accuracy from the logged confidences: {self.estimate:.4f} (an estimate)")
        performance = self.performance
        if performance is not None:
            measured = f"live accuracy {performance.accuracy:.4f}, " if performance.accuracy is not None else ""
            lines.append(f"{name}: {performance.status} ({measured}{performance.rows} labeled rows)")
            lines += [f"  - {reason}" for reason in performance.reasons(performance_thresholds)]
            if performance.status == PerformanceStatus.INSUFFICIENT_LABELS:
                lines.append(f"  no verdict: at least {performance_thresholds.min_labeled_rows} labeled rows needed")
        return lines

    def problem(self) -> StepError | None:
        """The error a scheduler reacts to (exit 1), or None when nothing was found."""
        name = f"{self.model_name} version {self.version}"
        if self.performance_drop:
            also = " and drift" if self.drift else ""
            return PerformanceDropped(f"performance drop{also} detected for {name}")
        if self.drift:
            return DriftDetected(f"drift detected for {name}")
        return None


@dataclass(frozen=True)
class MonitorInputs:
    """Everything a check needs, read before its run starts: a version or log that is not there leaves no failed run."""

    version: str
    reference: Reference
    live: LiveRows
    labeled: LabeledRows | None
    predictions: str
    feedback: str | None
    contract: TableContract
    window: Window = WHOLE  # the part of a capture read (a log is read whole)


def monitor_version(
    client,
    model_name: str,
    inputs: MonitorInputs,
    thresholds: DriftThresholds,
    performance_thresholds: PerformanceThresholds,
) -> MonitorResult:
    """Assess inside the active run; log metrics, plots and the report; tag the version with the verdicts."""
    import mlflow

    version, reference, live, labeled = inputs.version, inputs.reference, inputs.live, inputs.labeled
    source, feedback_source, contract = inputs.predictions, inputs.feedback, inputs.contract

    assessment = assess(reference.frame, live.frame, thresholds, contract, reference.label)
    params = {"predictions": source, "model_name": model_name, "model_version": version, **thresholds.__dict__}
    if not inputs.window.whole:
        params.update(inputs.window.params())
    if labeled is not None:
        params.update({"feedback": feedback_source, **performance_thresholds.__dict__})
    cli.log_params(params)
    estimate = estimated_accuracy(live.frame["confidence"])
    metrics = run_metrics(assessment, live)
    if estimate is not None:
        metrics["estimated_accuracy"] = estimate
    paths = plot_paths(assessment.features)
    for name, result in assessment.features.items():
        mlflow.log_figure(feature_figure(reference.frame[name], live.frame[name], result), paths[name])
    text = report(
        assessment,
        live,
        thresholds,
        model_name=model_name,
        version=version,
        source=source,
        reference=reference.source,
        reference_rows=len(reference.frame),
        contract=contract,
    )
    held_out = (client.get_model_version(model_name, version).tags or {}).get(Tag.EVAL_ACCURACY)
    extra = estimate_lines(estimate, assessment.rows, float(held_out) if held_out else None)
    tags = {Tag.DRIFT_STATUS: assessment.status}
    performance = None
    if labeled is not None:
        checked = labeled.of_version(model_name, version).of_classes(contract)
        performance = assess_performance(checked.frame, performance_thresholds, contract.classes)
        metrics.update(performance_metrics(performance, checked))
        metrics["other_version_labeled_rows"] = len(labeled.frame) - len(checked.frame)
        others = {k: n for k, n in labeled.by_version().items() if k != f"{model_name}/{version}"}
        extra += performance_lines(
            performance, checked, performance_thresholds, version=version, source=feedback_source, other_versions=others
        )
        if performance.rows:
            title = f"Live traffic of version {version}: confusion matrix ({performance.rows} labeled rows)"
            figure = confusion_matrix_figure(
                checked.frame[LABEL_COLUMN], checked.frame["prediction"], list(performance.classes), title=title
            )
            mlflow.log_figure(figure, LIVE_CONFUSION_ARTIFACT)
        tags[Tag.PERFORMANCE_STATUS] = performance.status
    mlflow.log_metrics(metrics)
    mlflow.log_text(text + "".join(f"{line}\n" for line in extra), REPORT_ARTIFACT)
    mlflow.set_tags({Tag.MODEL_NAME: model_name, Tag.MODEL_VERSION: version, **tags})
    monitor_run = mlflow.active_run().info.run_id
    version_tags = {**tags, Tag.DRIFT_RUN_ID: monitor_run}
    if performance is not None:
        version_tags[Tag.LIVE_LABELED_ROWS] = str(performance.rows)
        if performance.accuracy is not None:
            version_tags[Tag.LIVE_ACCURACY] = f"{performance.accuracy:.6f}"
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return MonitorResult(model_name, version, monitor_run, assessment, estimate, performance)


def gather(
    client,
    model_name: str,
    alias: str,
    version: str | None,
    predictions: str | Path,
    feedback: str | Path | None,
    data_path: str = DEFAULT_DATA_PATH,
    label: str = DEFAULT_LABEL,
    window: Window = WHOLE,
) -> MonitorInputs:
    """The version, its reference and the live rows (with their labels), before any run starts.

    ``predictions`` and ``feedback`` as ``steps.monitoring.labels.predictions_path`` and ``feedback_path``
    give them: paths of JSON-lines logs, or a capture's location (a string).
    """
    target = resolve_version(client, model_name, alias, version)
    contract = version_contract(version_uri(model_name, target.version))
    check_names(contract)
    if isinstance(predictions, str):
        sources = CaptureSource(predictions), CaptureSource(str(feedback)) if feedback is not None else None
        read = read_capture(sources[0], model_name, window, target.version, contract.feature_names, sources[1])
        live, labeled = read.live, read.labeled
        _logger.info("Read %d predictions file(s) of the capture %s (%s)", read.files, predictions, window.describe())
    else:
        live = read_predictions(predictions, model_name, target.version, contract.feature_names)
        labeled = read_labels(feedback, predictions) if feedback is not None else None
    reference = reference_rows(target.run_id, contract, data_path, label)
    source = str(predictions)
    return MonitorInputs(
        target.version, reference, live, labeled, source, str(feedback) if feedback else None, contract, window
    )


@click.command(
    help=f"Check the prediction log for drift against the serving version's training data (a version the pipeline "
    "did not train: the table --data-path with --label), and, with --feedback, "
    f"live accuracy from labels; logs {REPORT_ARTIFACT} and plots, tags the version with drift_status and "
    "performance_status, exits 1 on drift or a performance drop."
)
@options.live_traffic
@options.model_name
@click.option("--alias", default=CHAMPION, show_default=True, help="Check the version holding this alias ...")
@click.option("--version", "version", default="", help="... or this version (wins over --alias).")
@options.data_path
@options.label
@options.drift
@options.live_performance
def main(model_name, alias, version, data_path, label, drift_thresholds, performance_thresholds, **traffic):
    window, predictions, feedback = locate(**traffic)
    import mlflow  # after the checks: a bad argument should not wait for MLflow's import

    client = mlflow.MlflowClient()
    inputs = gather(client, model_name, alias, version.strip() or None, predictions, feedback, data_path, label, window)
    with cli.step_run("monitor", default_experiment=MONITORING_EXPERIMENT):
        result = monitor_version(client, model_name, inputs, drift_thresholds, performance_thresholds)
    for line in result.summary(drift_thresholds, performance_thresholds):
        click.echo(line)
    if (problem := result.problem()) is not None:
        raise problem


if __name__ == "__main__":
    cli.run(main)
