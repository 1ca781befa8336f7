"""The drift report: run metrics, one plot per feature and ``drift_report.md``, from a ``DriftAssessment``.

Metric keys and plot file names carry feature and class names, which may hold any
character (``od280/od315 of diluted wines``), so they are made safe by
``steps.common.metric_names``; the report names each feature as written.
"""

from collections.abc import Iterable

import numpy as np
import pandas as pd

from iris_core.contract import DriftStatus
from iris_core.table.contract import TableContract
from steps.common.config import DriftThresholds
from steps.common.metric_names import file_names, metric_keys
from steps.monitoring.drift import DriftAssessment, FeatureDrift, LiveRows

REPORT_ARTIFACT = "drift_report.md"
PLOTS_DIR = "drift_plots"
_FEATURE_FIGURES = ("ks_statistic", "ks_pvalue", "psi", "mean_shift")


def plot_paths(features: Iterable[str]) -> dict[str, str]:
    """The artifact path of each feature's plot: ``drift_plots/<name>.png``, the name made a file name."""
    return {name: f"{PLOTS_DIR}/{file}" for name, file in file_names(features, ".png").items()}


def run_metrics(assessment: DriftAssessment, live: LiveRows) -> dict[str, float]:
    metrics = {
        "live_rows": assessment.rows,
        "skipped_lines": live.skipped,
        "other_version_rows": sum(live.others.values()),
        "incomplete_rows": live.incomplete,
    }
    outside = metric_keys("outside_observed_", assessment.outside_observed)
    metrics.update({outside[name]: share for name, share in assessment.outside_observed.items()})
    if assessment.status == DriftStatus.INSUFFICIENT_DATA:
        return metrics
    metrics["drift_detected"] = float(assessment.status == DriftStatus.DRIFT)
    metrics["drifted_features"] = len(assessment.drifted_features)
    keys = {figure: metric_keys(f"{figure}_", assessment.features) for figure in _FEATURE_FIGURES}
    for name, r in assessment.features.items():
        metrics.update({keys[figure][name]: getattr(r, figure) for figure in _FEATURE_FIGURES})
    mix = assessment.class_mix
    metrics.update({"class_mix_tvd": mix.tvd, "class_mix_psi": mix.psi, "class_mix_pvalue": mix.pvalue})
    shares = metric_keys("live_share_", mix.live)
    metrics.update({shares[c]: s for c, s in mix.live.items()})
    if assessment.mean_confidence is not None:
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


def report(
    assessment: DriftAssessment,
    live: LiveRows,
    thresholds: DriftThresholds,
    *,
    model_name: str,
    version: str,
    source: str,
    reference: str,
    reference_rows: int,
    contract: TableContract | None = None,
) -> str:
    """The markdown report logged as ``drift_report.md``; its first line is the verdict.

    ``reference`` says where the reference rows came from (a training run's split, or a table).
    """
    lines = [f"# {model_name} version {version}: {assessment.status}", ""]
    lines.append(
        f"- prediction log: `{source}`: {assessment.rows} rows of version {version}, {live.skipped} unreadable lines skipped"
    )
    if live.incomplete:
        lines.append(f"- rows of version {version} without one of its features, left out: {live.incomplete}")
    if live.others:
        others = ", ".join(f"{key}: {n}" for key, n in live.others.items())
        lines.append(f"- rows of other versions, not compared ({others}); check them with `-P version=N`")
    if assessment.rows:
        lines.append(f"- time range: {live.frame['ts'].min()} to {live.frame['ts'].max()}")
    lines.append(f"- reference: {reference} ({reference_rows} rows)")
    lines.append(
        f"- rule: a feature drifts when KS p-value < {thresholds.alpha} and PSI >= {thresholds.psi_threshold}; "
        f"the class mix shifts when chi-square p-value < {thresholds.alpha} and total variation >= {thresholds.class_shift}"
    )
    if assessment.status == DriftStatus.INSUFFICIENT_DATA:
        lines += ["", f"No verdict: {assessment.rows} rows, at least {thresholds.min_rows} needed (`min_rows`)."]
        lines += soft_bound_lines(assessment, contract)
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "| feature | KS statistic | KS p-value | PSI | mean shift (reference SD) | drift |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in assessment.features.items():
        lines.append(
            f"| {_cell(name)} | {r.ks_statistic:.3f} | {r.ks_pvalue:.2g} | {r.psi:.3f} | {r.mean_shift:+.2f} "
            f"| {'yes' if r.drifted else 'no'} |"
        )
    mix = assessment.class_mix
    lines += ["", "| class | training share | live predicted share |", "|---|---|---|"]
    lines += [f"| {_cell(c)} | {mix.reference[c]:.3f} | {mix.live[c]:.3f} |" for c in mix.reference]
    confidence = (
        f"{assessment.mean_confidence:.3f}" if assessment.mean_confidence is not None else "n/a (no logged confidences)"
    )
    lines += [
        "",
        f"Class mix: total variation {mix.tvd:.3f}, PSI {mix.psi:.3f}, chi-square p-value {mix.pvalue:.2g} ({'shifted' if mix.shifted else 'unchanged'}).",
        f"Mean confidence: {confidence}.",
    ]
    lines += soft_bound_lines(assessment, contract)
    reasons = assessment.reasons(thresholds)
    if reasons:
        lines += ["", "Drift because:", *[f"- {reason}" for reason in reasons]]
    return "\n".join(lines) + "\n"


def soft_bound_lines(assessment: DriftAssessment, contract: TableContract | None) -> list[str]:
    """The soft bounds: each feature's range in training and the share of live rows outside it."""
    if contract is None or not assessment.outside_observed:
        return []
    lines = ["", "Soft bounds (the range each feature had in training; reported, never refused):", ""]
    lines += ["| feature | observed min | observed max | live rows outside |", "|---|---|---|---|"]
    for feature in contract.features:
        if feature.name in assessment.outside_observed:
            low, high = feature.observed
            share = assessment.outside_observed[feature.name]
            lines.append(f"| {_cell(feature.name)} | {low:g} | {high:g} | {share:.1%} |")
    return lines


def _cell(text: str) -> str:
    """A name as a markdown table cell: its pipes escaped."""
    return str(text).replace("|", "\\|")
