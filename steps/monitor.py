"""Entry point ``monitor``: does live traffic still look like the data the serving version was trained on?

Reads the proxy's prediction log (format in ``serving.prediction_log``) and compares the
rows served by one model version with that version's training split (the
``data/train.csv`` artifact of its training run). One run checks one version: by default
the one holding ``alias``, the version serving now. Rows of other versions are left out
and counted (check them with ``--version N``); rows that name no registry version are
taken as served by the checked one.

The verdict needs significance and size together, so that neither a tiny but certain
shift in heavy traffic nor sampling noise in light traffic raises an alarm:

- a feature drifts when its two-sample Kolmogorov-Smirnov p-value is below ``alpha`` and
  its population stability index (PSI) reaches ``psi_threshold``;
- the predicted-class mix shifts when a chi-square test against the training class mix
  has a p-value below ``alpha`` and the total variation distance reaches ``class_shift``.

Any of these makes the status ``drift`` (exit 1, so a scheduler can trigger retraining);
otherwise ``no_drift`` (exit 0). With fewer than ``min_rows`` rows there is no verdict:
status ``insufficient_data``, exit 0, since too little traffic is not a failure. The
status is set as the ``drift_status`` tag of the model version and of the run, which
also holds the statistics as metrics, one PNG per feature and ``drift_report.md``.
"""

import io
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pandas as pd

from steps import cli
from steps.config import CHAMPION, CLASSES, DEFAULT_MODEL_NAME, FEATURES, LABEL, MONITORING_EXPERIMENT, TRAIN_SPLIT_ARTIFACT
from steps.errors import InvalidParameter, StepError

_logger = logging.getLogger(__name__)

DRIFT, NO_DRIFT, INSUFFICIENT_DATA = "drift", "no_drift", "insufficient_data"
# Quantile bins of the reference for PSI. Ten is the custom, but the reference is a
# ~120-row training split and live windows may hold only dozens of rows: PSI's sampling
# bias grows with the number of bins, and five keep it well under the threshold.
PSI_BINS = 5
REPORT_ARTIFACT = "drift_report.md"
PLOTS_DIR = "drift_plots"


class DriftDetected(StepError):
    """Live traffic drifted past the thresholds: exit 1 so that a scheduler can react."""


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.01
    psi_threshold: float = 0.25
    class_shift: float = 0.2
    min_rows: int = 30

    def validated(self) -> "Thresholds":
        if not 0 < self.alpha < 1:
            raise InvalidParameter(f"alpha must be between 0 and 1, got {self.alpha}")
        if not (math.isfinite(self.psi_threshold) and self.psi_threshold >= 0):
            raise InvalidParameter(f"psi_threshold must be a non-negative number, got {self.psi_threshold}")
        if not 0 <= self.class_shift <= 1:
            raise InvalidParameter(f"class_shift must be between 0 and 1, got {self.class_shift}")
        if self.min_rows < 2:
            raise InvalidParameter(f"min_rows must be at least 2, got {self.min_rows}")
        return self


@dataclass(frozen=True)
class FeatureDrift:
    ks_statistic: float
    ks_pvalue: float
    psi: float
    mean_shift: float  # live mean minus reference mean, in reference standard deviations
    drifted: bool


@dataclass(frozen=True)
class ClassMix:
    reference: dict[str, float]
    live: dict[str, float]
    tvd: float
    psi: float
    pvalue: float
    shifted: bool


@dataclass(frozen=True)
class LiveRows:
    """The rows of the checked version, and what the log held besides them."""

    frame: pd.DataFrame
    skipped: int = 0
    others: dict[str, int] = field(default_factory=dict)  # "name/version" -> rows left out


@dataclass(frozen=True)
class DriftAssessment:
    status: str
    rows: int
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    class_mix: ClassMix | None = None
    mean_confidence: float | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, result in self.features.items() if result.drifted]

    def reasons(self, thresholds: Thresholds) -> list[str]:
        reasons = [
            f"{name}: KS p-value {r.ks_pvalue:.2g} < {thresholds.alpha} and PSI {r.psi:.3f} >= {thresholds.psi_threshold}"
            for name, r in self.features.items()
            if r.drifted
        ]
        if self.class_mix and self.class_mix.shifted:
            reasons.append(
                f"predicted-class mix: chi-square p-value {self.class_mix.pvalue:.2g} < {thresholds.alpha} "
                f"and total variation {self.class_mix.tvd:.3f} >= {thresholds.class_shift}"
            )
        return reasons


def live_rows(records: list[dict], model_name: str, version: str, skipped: int = 0) -> LiveRows:
    """The logged rows served by ``model_name`` version ``version``.

    Rows that name no registry version (none, or a proxy's placeholder such as "unknown"
    when it fronts a server it was not told the version of) count as the checked version.
    """
    keep, others = [], Counter()
    for record in records:
        name = record.get("model_name") or model_name
        logged = record.get("model_version")
        served_by = logged if logged and logged.isdigit() else version
        if name == model_name and served_by == version:
            keep.append({**record["features"], "prediction": record["prediction"], "confidence": record["confidence"], "ts": record.get("ts")})
        else:
            others[f"{name}/{served_by}"] += 1
    frame = pd.DataFrame(keep, columns=[*FEATURES, "prediction", "confidence", "ts"])
    return LiveRows(frame, skipped, dict(sorted(others.items())))


def psi(reference, live, bins: int = PSI_BINS) -> float:
    """Population stability index over quantile bins of the reference.

    Counts get half a row added per bin, so that an empty bin means a large, finite
    contribution instead of an infinite one.
    """
    reference, live = np.asarray(reference, dtype=float), np.asarray(live, dtype=float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges = np.concatenate(([-np.inf], edges[1:-1], [np.inf]))
    expected = _smoothed_shares(np.histogram(reference, edges)[0])
    actual = _smoothed_shares(np.histogram(live, edges)[0])
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _smoothed_shares(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=float) + 0.5
    return counts / counts.sum()


def feature_drift(reference: pd.Series, live: pd.Series, thresholds: Thresholds) -> FeatureDrift:
    from scipy.stats import ks_2samp

    ks = ks_2samp(reference.to_numpy(dtype=float), live.to_numpy(dtype=float))
    index = psi(reference, live)
    spread = float(reference.std()) or 1.0
    return FeatureDrift(
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        psi=index,
        mean_shift=float(live.mean() - reference.mean()) / spread,
        drifted=bool(ks.pvalue < thresholds.alpha and index >= thresholds.psi_threshold),
    )


def class_mix(reference_labels: pd.Series, predictions: pd.Series, thresholds: Thresholds) -> ClassMix:
    """Predicted classes of live rows against the class mix the version was trained on."""
    from scipy.stats import chisquare

    classes = sorted(set(CLASSES) | set(reference_labels) | set(predictions))
    reference_counts = reference_labels.value_counts().reindex(classes, fill_value=0).to_numpy()
    live_counts = predictions.value_counts().reindex(classes, fill_value=0).to_numpy()
    expected, actual = _smoothed_shares(reference_counts), live_counts / live_counts.sum()
    tvd = float(0.5 * np.abs(actual - reference_counts / reference_counts.sum()).sum())
    pvalue = float(chisquare(live_counts, expected * live_counts.sum()).pvalue)
    index = float(np.sum((_smoothed_shares(live_counts) - expected) * np.log(_smoothed_shares(live_counts) / expected)))
    return ClassMix(
        reference={c: float(n / reference_counts.sum()) for c, n in zip(classes, reference_counts)},
        live={c: float(s) for c, s in zip(classes, actual)},
        tvd=tvd,
        psi=index,
        pvalue=pvalue,
        shifted=bool(pvalue < thresholds.alpha and tvd >= thresholds.class_shift),
    )


def assess(reference: pd.DataFrame, live: pd.DataFrame, thresholds: Thresholds) -> DriftAssessment:
    """The verdict as a pure function of the two frames (reference: FEATURES + LABEL; live: FEATURES + prediction, confidence)."""
    if len(live) < thresholds.min_rows:
        return DriftAssessment(INSUFFICIENT_DATA, len(live))
    features = {name: feature_drift(reference[name], live[name], thresholds) for name in FEATURES}
    mix = class_mix(reference[LABEL], live["prediction"], thresholds)
    drifted = any(r.drifted for r in features.values()) or mix.shifted
    return DriftAssessment(
        DRIFT if drifted else NO_DRIFT, len(live), features, mix, float(live["confidence"].mean())
    )


def run_metrics(assessment: DriftAssessment, live: LiveRows) -> dict[str, float]:
    metrics = {"live_rows": assessment.rows, "skipped_lines": live.skipped, "other_version_rows": sum(live.others.values())}
    if assessment.status == INSUFFICIENT_DATA:
        return metrics
    metrics["drift_detected"] = float(assessment.status == DRIFT)
    metrics["drifted_features"] = len(assessment.drifted_features)
    for name, r in assessment.features.items():
        metrics.update({f"ks_statistic_{name}": r.ks_statistic, f"ks_pvalue_{name}": r.ks_pvalue, f"psi_{name}": r.psi, f"mean_shift_{name}": r.mean_shift})
    mix = assessment.class_mix
    metrics.update({"class_mix_tvd": mix.tvd, "class_mix_psi": mix.psi, "class_mix_pvalue": mix.pvalue})
    metrics.update({f"live_share_{c}": s for c, s in mix.live.items()})
    metrics["mean_confidence"] = assessment.mean_confidence
    return metrics


def feature_figure(reference: pd.Series, live: pd.Series, result: FeatureDrift):
    """Reference and live histograms on shared bins, as densities so different row counts compare."""
    from matplotlib.figure import Figure

    values = np.concatenate([reference.to_numpy(dtype=float), live.to_numpy(dtype=float)])
    bins = np.histogram_bin_edges(values, bins=20)
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    axes.hist(reference, bins=bins, density=True, alpha=0.5, label=f"reference ({len(reference)} rows)")
    axes.hist(live, bins=bins, density=True, alpha=0.5, label=f"live ({len(live)} rows)")
    verdict = "drift" if result.drifted else "no drift"
    axes.set_title(f"{reference.name}: KS p={result.ks_pvalue:.2g}, PSI={result.psi:.3f} ({verdict})")
    axes.set_xlabel(str(reference.name))
    axes.set_ylabel("density")
    axes.legend()
    figure.tight_layout()
    return figure


def report(assessment: DriftAssessment, live: LiveRows, thresholds: Thresholds, *, model_name: str, version: str, source: str, reference_run: str, reference_rows: int) -> str:
    """The markdown report logged as ``drift_report.md``; its first line is the verdict."""
    lines = [f"# {model_name} version {version}: {assessment.status}", ""]
    lines.append(f"- prediction log: `{source}`: {assessment.rows} rows of version {version}, {live.skipped} unreadable lines skipped")
    if live.others:
        others = ", ".join(f"{key}: {n}" for key, n in live.others.items())
        lines.append(f"- rows of other versions, not compared ({others}); check them with `-P version=N`")
    if assessment.rows:
        lines.append(f"- time range: {live.frame['ts'].min()} to {live.frame['ts'].max()}")
    lines.append(f"- reference: `{TRAIN_SPLIT_ARTIFACT}` of training run `{reference_run}` ({reference_rows} rows)")
    lines.append(
        f"- rule: a feature drifts when KS p-value < {thresholds.alpha} and PSI >= {thresholds.psi_threshold}; "
        f"the class mix shifts when chi-square p-value < {thresholds.alpha} and total variation >= {thresholds.class_shift}"
    )
    if assessment.status == INSUFFICIENT_DATA:
        lines += ["", f"No verdict: {assessment.rows} rows, at least {thresholds.min_rows} needed (`min_rows`)."]
        return "\n".join(lines) + "\n"
    lines += ["", "| feature | KS statistic | KS p-value | PSI | mean shift (reference SD) | drift |", "|---|---|---|---|---|---|"]
    for name, r in assessment.features.items():
        lines.append(f"| {name} | {r.ks_statistic:.3f} | {r.ks_pvalue:.2g} | {r.psi:.3f} | {r.mean_shift:+.2f} | {'yes' if r.drifted else 'no'} |")
    mix = assessment.class_mix
    lines += ["", "| class | training share | live predicted share |", "|---|---|---|"]
    lines += [f"| {c} | {mix.reference[c]:.3f} | {mix.live[c]:.3f} |" for c in mix.reference]
    lines += [
        "",
        f"Class mix: total variation {mix.tvd:.3f}, PSI {mix.psi:.3f}, chi-square p-value {mix.pvalue:.2g} ({'shifted' if mix.shifted else 'unchanged'}).",
        f"Mean confidence: {assessment.mean_confidence:.3f}.",
    ]
    reasons = assessment.reasons(thresholds)
    if reasons:
        lines += ["", "Drift because:", *[f"- {reason}" for reason in reasons]]
    return "\n".join(lines) + "\n"


def resolve_version(client, model_name: str, alias: str, version: str | None) -> str:
    from mlflow.exceptions import MlflowException

    try:
        if version:
            return str(client.get_model_version(model_name, version).version)
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
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
    from serving.prediction_log import read_log

    try:
        contents = read_log(path)
    except OSError as exc:
        raise StepError(f"cannot read the prediction log {path}: {exc.strerror or exc}") from None
    if contents.skipped:
        _logger.warning("Skipped %d unreadable lines of %s (first: %s)", contents.skipped, path, contents.first_skipped)
    return live_rows(contents.records, model_name, version, contents.skipped)


def monitor_version(
    client, model_name: str, version: str, reference: pd.DataFrame, reference_run: str,
    live: LiveRows, thresholds: Thresholds, source: str,
) -> DriftAssessment:
    """Assess inside the active run; log metrics, plots and the report; tag the version with the status."""
    import mlflow

    assessment = assess(reference, live.frame, thresholds)
    mlflow.log_params({"predictions": source, "model_name": model_name, "model_version": version, **thresholds.__dict__})
    mlflow.log_metrics(run_metrics(assessment, live))
    for name, result in assessment.features.items():
        mlflow.log_figure(feature_figure(reference[name], live.frame[name], result), f"{PLOTS_DIR}/{name}.png")
    text = report(
        assessment, live, thresholds, model_name=model_name, version=version, source=source,
        reference_run=reference_run, reference_rows=len(reference),
    )
    mlflow.log_text(text, REPORT_ARTIFACT)
    mlflow.set_tags({"model_name": model_name, "model_version": version, "drift_status": assessment.status})
    monitor_run = mlflow.active_run().info.run_id
    for key, value in {"drift_status": assessment.status, "drift_run_id": monitor_run}.items():
        client.set_model_version_tag(model_name, version, key, value)
    return assessment


@click.command(help=f"Check the prediction log for drift against the serving version's training data; logs {REPORT_ARTIFACT} and per-feature plots, tags the version with drift_status, exits 1 on drift.")
@click.option("--predictions", required=True, type=click.Path(exists=True, dir_okay=False), help="The proxy's JSON-lines prediction log.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--alias", default=CHAMPION, show_default=True, help="Check the version holding this alias ...")
@click.option("--version", "version", default="", help="... or this version (wins over --alias).")
@click.option("--alpha", type=float, default=Thresholds.alpha, show_default=True, help="Significance level of the KS and chi-square tests.")
@click.option("--psi-threshold", type=float, default=Thresholds.psi_threshold, show_default=True, help="PSI from which a significant feature shift counts as drift.")
@click.option("--class-shift", type=float, default=Thresholds.class_shift, show_default=True, help="Total variation of the predicted-class mix from which a significant shift counts as drift.")
@click.option("--min-rows", type=int, default=Thresholds.min_rows, show_default=True, help="Fewer rows give no verdict (exit 0).")
def main(predictions, model_name, alias, version, alpha, psi_threshold, class_shift, min_rows):
    thresholds = Thresholds(alpha, psi_threshold, class_shift, min_rows).validated()
    import mlflow  # after the checks: a bad argument should not wait for MLflow's import

    client = mlflow.MlflowClient()
    version = resolve_version(client, model_name, alias, version.strip() or None)
    live = read_predictions(predictions, model_name, version)
    reference_run = client.get_model_version(model_name, version).run_id
    reference = load_reference(reference_run)
    with cli.step_run("monitor", default_experiment=MONITORING_EXPERIMENT):
        assessment = monitor_version(client, model_name, version, reference, reference_run, live, thresholds, str(predictions))
    click.echo(f"{model_name} version {version}: {assessment.status} ({assessment.rows} rows)")
    for reason in assessment.reasons(thresholds):
        click.echo(f"  - {reason}")
    if assessment.status == INSUFFICIENT_DATA:
        click.echo(f"  no verdict: at least {min_rows} rows needed")
    if assessment.status == DRIFT:
        raise DriftDetected(f"drift detected for {model_name} version {version}")


if __name__ == "__main__":
    cli.run(main)
