"""The drift statistics: does live traffic still look like the data a version was trained on?

Pure functions of two frames (the reference: FEATURES + LABEL; live: FEATURES +
prediction, confidence). The verdict needs significance and size together, so that
neither a tiny but certain shift in heavy traffic nor sampling noise in light traffic
raises an alarm:

- a feature drifts when its two-sample Kolmogorov-Smirnov p-value is below ``alpha`` and
  its population stability index (PSI) reaches ``psi_threshold``;
- the predicted-class mix shifts when a chi-square test against the training class mix
  has a p-value below ``alpha`` and the total variation distance reaches ``class_shift``.

With fewer than ``min_rows`` rows there is no verdict (``insufficient_data``).
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iris_core.contract import DriftStatus
from iris_core.schema import CLASSES, FEATURES, LABEL
from steps.config import DriftThresholds

# Quantile bins of the reference for PSI. Ten is the custom, but the reference is a
# ~120-row training split and live windows may hold only dozens of rows: PSI's sampling
# bias grows with the number of bins, and five keep it well under the threshold.
PSI_BINS = 5


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
    status: DriftStatus
    rows: int
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    class_mix: ClassMix | None = None
    mean_confidence: float | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, result in self.features.items() if result.drifted]

    def reasons(self, thresholds: DriftThresholds) -> list[str]:
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
            keep.append(
                {
                    **record["features"],
                    "prediction": record["prediction"],
                    "confidence": record["confidence"],
                    "ts": record.get("ts"),
                }
            )
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


def feature_drift(reference: pd.Series, live: pd.Series, thresholds: DriftThresholds) -> FeatureDrift:
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


def class_mix(reference_labels: pd.Series, predictions: pd.Series, thresholds: DriftThresholds) -> ClassMix:
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


def assess(reference: pd.DataFrame, live: pd.DataFrame, thresholds: DriftThresholds) -> DriftAssessment:
    """The verdict as a pure function of the two frames (reference: FEATURES + LABEL; live: FEATURES + prediction, confidence)."""
    if len(live) < thresholds.min_rows:
        return DriftAssessment(DriftStatus.INSUFFICIENT_DATA, len(live))
    features = {name: feature_drift(reference[name], live[name], thresholds) for name in FEATURES}
    mix = class_mix(reference[LABEL], live["prediction"], thresholds)
    drifted = any(r.drifted for r in features.values()) or mix.shifted
    return DriftAssessment(
        DriftStatus.DRIFT if drifted else DriftStatus.NO_DRIFT,
        len(live),
        features,
        mix,
        float(live["confidence"].mean()),
    )
