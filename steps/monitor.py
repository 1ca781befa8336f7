"""Entry point ``monitor``: does live traffic still look like the data the serving version was trained on?

Reads the proxy's prediction log (format in ``iris_core.records``) and compares the
rows served by one model version with that version's training split (the
``data/train.csv`` artifact of its training run). One run checks one version: by default
the one holding ``alias``, the version serving now. Rows of other versions are left out
and counted (check them with ``--version N``); rows that name no registry version are
taken as served by the checked one.

The statistics and the verdict are ``steps.drift``; the report ``steps.drift_report``. Drift
makes the status ``drift`` (exit 1, so a scheduler can trigger retraining);
otherwise ``no_drift`` (exit 0). With fewer than ``min_rows`` rows there is no verdict:
status ``insufficient_data``, exit 0, since too little traffic is not a failure. The
status is set as the ``drift_status`` tag of the model version and of the run, which
also holds the statistics as metrics, one PNG per feature and ``drift_report.md``.
"""

import io
import logging
from pathlib import Path

import click
import pandas as pd

from iris_core.contract import MONITORING_EXPERIMENT, TRAIN_SPLIT_ARTIFACT, DriftStatus, Tag
from iris_core.errors import NotFound
from iris_core.records import read_log
from iris_core.refs import CHAMPION, ModelRef
from iris_core.resolver import Resolved, resolve
from steps import cli, options
from steps.config import DriftThresholds
from steps.drift import DriftAssessment, LiveRows, assess, live_rows
from steps.drift_report import PLOTS_DIR, REPORT_ARTIFACT, feature_figure, report, run_metrics
from steps.errors import DriftDetected, StepError

_logger = logging.getLogger(__name__)


def resolve_version(client, model_name: str, alias: str, version: str | None) -> Resolved:
    """The version to check: ``version`` when given, else the one holding ``alias``."""
    try:
        return resolve(client, ModelRef(model_name, version=version) if version else ModelRef(model_name, alias=alias))
    except NotFound:
        wanted = f"version {version}" if version else f"alias @{alias}"
        raise StepError(f"model {model_name!r} has no {wanted}") from None


def load_reference(run_id: str) -> pd.DataFrame:
    """The training split the version's training run logged."""
    import mlflow

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{TRAIN_SPLIT_ARTIFACT}")
    except Exception:
        raise StepError(f"run {run_id} has no {TRAIN_SPLIT_ARTIFACT}: was it trained by this pipeline?") from None
    return pd.read_csv(io.StringIO(text))


def read_predictions(path: str | Path, model_name: str, version: str) -> LiveRows:
    try:
        contents = read_log(path)
    except OSError as exc:
        raise StepError(f"cannot read the prediction log {path}: {exc.strerror or exc}") from None
    if contents.skipped:
        _logger.warning("Skipped %d unreadable lines of %s (first: %s)", contents.skipped, path, contents.first_skipped)
    return live_rows(contents.records, model_name, version, contents.skipped)


def monitor_version(
    client,
    model_name: str,
    version: str,
    reference: pd.DataFrame,
    reference_run: str,
    live: LiveRows,
    thresholds: DriftThresholds,
    source: str,
) -> DriftAssessment:
    """Assess inside the active run; log metrics, plots and the report; tag the version with the status."""
    import mlflow

    assessment = assess(reference, live.frame, thresholds)
    mlflow.log_params(
        {"predictions": source, "model_name": model_name, "model_version": version, **thresholds.__dict__}
    )
    mlflow.log_metrics(run_metrics(assessment, live))
    for name, result in assessment.features.items():
        mlflow.log_figure(feature_figure(reference[name], live.frame[name], result), f"{PLOTS_DIR}/{name}.png")
    text = report(
        assessment,
        live,
        thresholds,
        model_name=model_name,
        version=version,
        source=source,
        reference_run=reference_run,
        reference_rows=len(reference),
    )
    mlflow.log_text(text, REPORT_ARTIFACT)
    mlflow.set_tags({Tag.MODEL_NAME: model_name, Tag.MODEL_VERSION: version, Tag.DRIFT_STATUS: assessment.status})
    monitor_run = mlflow.active_run().info.run_id
    for key, value in {Tag.DRIFT_STATUS: assessment.status, Tag.DRIFT_RUN_ID: monitor_run}.items():
        client.set_model_version_tag(model_name, version, key, value)
    return assessment


@click.command(
    help=f"Check the prediction log for drift against the serving version's training data; logs {REPORT_ARTIFACT} "
    "and per-feature plots, tags the version with drift_status, exits 1 on drift."
)
@click.option(
    "--predictions",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The proxy's JSON-lines prediction log.",
)
@options.model_name
@click.option("--alias", default=CHAMPION, show_default=True, help="Check the version holding this alias ...")
@click.option("--version", "version", default="", help="... or this version (wins over --alias).")
@click.option(
    "--alpha",
    type=float,
    default=DriftThresholds.alpha,
    show_default=True,
    help="Significance level of the KS and chi-square tests.",
)
@click.option(
    "--psi-threshold",
    type=float,
    default=DriftThresholds.psi_threshold,
    show_default=True,
    help="PSI from which a significant feature shift counts as drift.",
)
@click.option(
    "--class-shift",
    type=float,
    default=DriftThresholds.class_shift,
    show_default=True,
    help="Total variation of the predicted-class mix from which a significant shift counts as drift.",
)
@click.option(
    "--min-rows",
    type=int,
    default=DriftThresholds.min_rows,
    show_default=True,
    help="Fewer rows give no verdict (exit 0).",
)
def main(predictions, model_name, alias, version, alpha, psi_threshold, class_shift, min_rows):
    thresholds = DriftThresholds(alpha, psi_threshold, class_shift, min_rows).validated()
    import mlflow  # after the checks: a bad argument should not wait for MLflow's import

    client = mlflow.MlflowClient()
    target = resolve_version(client, model_name, alias, version.strip() or None)
    live = read_predictions(predictions, model_name, target.version)
    reference = load_reference(target.run_id)
    with cli.step_run("monitor", default_experiment=MONITORING_EXPERIMENT):
        assessment = monitor_version(
            client, model_name, target.version, reference, target.run_id, live, thresholds, str(predictions)
        )
    click.echo(f"{model_name} version {target.version}: {assessment.status} ({assessment.rows} rows)")
    for reason in assessment.reasons(thresholds):
        click.echo(f"  - {reason}")
    if assessment.status == DriftStatus.INSUFFICIENT_DATA:
        click.echo(f"  no verdict: at least {min_rows} rows needed")
    if assessment.status == DriftStatus.DRIFT:
        raise DriftDetected(f"drift detected for {model_name} version {target.version}")


if __name__ == "__main__":
    cli.run(main)
