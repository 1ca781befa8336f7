"""The drift statistics: does live traffic still look like the data a version was trained on?

Pure functions of two frames (the reference: the version's features and its label column;
live: the features, prediction and confidence) and the version's contract, which names the
features, the label and the classes. The verdict needs significance and size together, so that
neither a tiny but certain shift in heavy traffic nor sampling noise in light traffic
raises an alarm:

- a feature drifts when its two-sample Kolmogorov-Smirnov p-value is below ``alpha`` and
  its population stability index (PSI) reaches ``psi_threshold``;
- the predicted-class mix shifts when a chi-square test against the training class mix
  has a p-value below ``alpha`` and the total variation distance reaches ``class_shift``.

With fewer than ``min_rows`` rows there is no verdict (``insufficient_data``). Beside the
verdict, the share of live rows outside each feature's observed range in training (the
contract's soft bounds) is reported: a figure to read, not a reason for drift.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iris_core.contract import DriftStatus
from iris_core.table.contract import TableContract
from steps.common.config import DriftThresholds

LIVE_COLUMNS = ("prediction", "confidence", "ts")  # what a live frame holds beside the features

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
    incomplete: int = 0  # rows of the version that lack one of its features, left out


@dataclass(frozen=True)
class DriftAssessment:
    status: DriftStatus
    rows: int
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    class_mix: ClassMix | None = None
    mean_confidence: float | None = None  # None when no row has a confidence
    outside_observed: dict[str, float] = field(default_factory=dict)  # feature -> share of rows outside its range

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


def live_rows(
    records: list[dict], model_name: str, version: str, features: Sequence[str], skipped: int = 0
) -> LiveRows:
    """The logged rows served by ``model_name`` version ``version``, with the version's ``features``.

    Rows that name no registry version (none, or a proxy's placeholder such as "unknown"
    when it fronts a server it was not told the version of) count as the checked version.
    Rows of the version that lack one of its features cannot be compared and are counted.
    """
    keep, others, incomplete = [], Counter(), 0
    features = list(features)
    for record in records:
        name = record.get("model_name") or model_name
        logged = record.get("model_version")
        served_by = logged if logged and logged.isdigit() else version
        if name != model_name or served_by != version:
            others[f"{name}/{served_by}"] += 1
            continue
        values = record["features"]
        if any(feature not in values for feature in features):
            incomplete += 1
            continue
        keep.append([*(values[f] for f in features), record["prediction"], record.get("confidence"), record.get("ts")])
    frame = pd.DataFrame(keep, columns=[*features, *LIVE_COLUMNS])
    frame = frame.astype({feature: "float64" for feature in features})
    frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce").astype("float64")
    return LiveRows(frame, skipped, dict(sorted(others.items())), incomplete)


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


def class_mix(
    reference_labels: pd.Series, predictions: pd.Series, thresholds: DriftThresholds, classes: Sequence[str] = ()
) -> ClassMix:
    """Predicted classes of live rows against the class mix the version was trained on (``classes``: the version's)."""
    from scipy.stats import chisquare

    reference_labels, predictions = reference_labels.astype(str), predictions.astype(str)
    classes = sorted(set(classes) | set(reference_labels) | set(predictions))
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


def outside_observed(live: pd.DataFrame, contract: TableContract) -> dict[str, float]:
    """For each feature with an observed range, the share of live rows outside it (the soft bounds)."""
    if not len(live):
        return {}
    shares = {}
    for feature in contract.features:
        if feature.observed is not None:
            low, high = feature.observed
            values = live[feature.name].to_numpy(dtype=float)
            shares[feature.name] = float(((values < low) | (values > high)).mean())
    return shares


def assess(
    reference: pd.DataFrame,
    live: pd.DataFrame,
    thresholds: DriftThresholds,
    contract: TableContract,
    label: str | None = None,
) -> DriftAssessment:
    """The verdict as a pure function of the two frames and the version's contract.

    ``reference`` holds the contract's features and the label column ``label`` (the
    contract's label unless told); ``live`` the features, prediction and confidence.
    """
    label = label or contract.label
    if len(live) < thresholds.min_rows:
        return DriftAssessment(
            DriftStatus.INSUFFICIENT_DATA, len(live), outside_observed=outside_observed(live, contract)
        )
    features = {name: feature_drift(reference[name], live[name], thresholds) for name in contract.feature_names}
    mix = class_mix(reference[label], live["prediction"], thresholds, contract.classes)
    drifted = any(r.drifted for r in features.values()) or mix.shifted
    confidence = pd.to_numeric(live["confidence"], errors="coerce").dropna()
    return DriftAssessment(
        DriftStatus.DRIFT if drifted else DriftStatus.NO_DRIFT,
        len(live),
        features,
        mix,
        float(confidence.mean()) if len(confidence) else None,
        outside_observed(live, contract),
    )
