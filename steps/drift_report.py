"""The drift report: run metrics, one plot per feature and ``drift_report.md``, from a ``DriftAssessment``."""

import numpy as np
import pandas as pd

from iris_core.contract import TRAIN_SPLIT_ARTIFACT, DriftStatus
from steps.config import DriftThresholds
from steps.drift import DriftAssessment, FeatureDrift, LiveRows

REPORT_ARTIFACT = "drift_report.md"
PLOTS_DIR = "drift_plots"


def run_metrics(assessment: DriftAssessment, live: LiveRows) -> dict[str, float]:
    metrics = {
        "live_rows": assessment.rows,
        "skipped_lines": live.skipped,
        "other_version_rows": sum(live.others.values()),
    }
    if assessment.status == DriftStatus.INSUFFICIENT_DATA:
        return metrics
    metrics["drift_detected"] = float(assessment.status == DriftStatus.DRIFT)
    metrics["drifted_features"] = len(assessment.drifted_features)
    for name, r in assessment.features.items():
        metrics.update(
            {
                f"ks_statistic_{name}": r.ks_statistic,
                f"ks_pvalue_{name}": r.ks_pvalue,
                f"psi_{name}": r.psi,
                f"mean_shift_{name}": r.mean_shift,
            }
        )
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


def report(
    assessment: DriftAssessment,
    live: LiveRows,
    thresholds: DriftThresholds,
    *,
    model_name: str,
    version: str,
    source: str,
    reference_run: str,
    reference_rows: int,
) -> str:
    """The markdown report logged as ``drift_report.md``; its first line is the verdict."""
    lines = [f"# {model_name} version {version}: {assessment.status}", ""]
    lines.append(
        f"- prediction log: `{source}`: {assessment.rows} rows of version {version}, {live.skipped} unreadable lines skipped"
    )
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
    if assessment.status == DriftStatus.INSUFFICIENT_DATA:
        lines += ["", f"No verdict: {assessment.rows} rows, at least {thresholds.min_rows} needed (`min_rows`)."]
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "| feature | KS statistic | KS p-value | PSI | mean shift (reference SD) | drift |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in assessment.features.items():
        lines.append(
            f"| {name} | {r.ks_statistic:.3f} | {r.ks_pvalue:.2g} | {r.psi:.3f} | {r.mean_shift:+.2f} | {'yes' if r.drifted else 'no'} |"
        )
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
