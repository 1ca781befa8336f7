"""Live performance from the logs: labels joined with the predictions they belong to, and what they say.

Pure functions of records as ``iris_core.records`` reads them. A label names a prediction
by request id and row; it may come days after it, so the prediction can be in an older,
rotated file (the caller streams all of them, oldest first). The join never guesses:

- a row's first label counts, later ones for the same row are duplicates;
- a label whose request id and row match no logged prediction is unmatched, and only
  counted (its request was never logged here, was sampled out, or rotated away);
- when a client reused a request id, the label goes with the latest prediction logged at or
  before the label (the answer the client had when it sent it).

Rows of a prediction log written before records had ``row`` take their place among the
consecutive lines of their request. Without labels, ``estimated_accuracy`` gives the
accuracy a calibrated classifier expects from its own confidences (NannyML's CBPE idea:
the mean probability of the predicted class), an estimate and an early warning only; a
model that gives no confidence (one logged without this project's outputs) gives none.

A frame of labeled rows holds each feature the records name under its own name, then the
``RECORD_COLUMNS``; the scores are per class of the version checked (its contract's).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd

from iris_core.contract import PerformanceStatus
from iris_core.table.contract import TableContract
from steps.common.config import PerformanceThresholds
from steps.common.metric_names import metric_keys

LABEL_COLUMN = "label"
RECORD_COLUMNS = (
    "prediction",
    "confidence",
    LABEL_COLUMN,
    "model_name",
    "model_version",
    "request_id",
    "row",
    "ts",
)


@dataclass(frozen=True)
class LabeledRows:
    """Logged predictions with their true labels, and what became of the labels that found none."""

    frame: pd.DataFrame  # the features, then RECORD_COLUMNS; one row per labeled prediction
    labels: int = 0  # readable label records
    duplicates: int = 0  # labels for a row labeled before
    unmatched: int = 0  # labels that match no logged prediction
    skipped: int = 0  # unreadable feedback lines
    unknown: int = 0  # labels that name no class of the version checked, left out

    def of_version(self, model_name: str, version: str) -> "LabeledRows":
        """The rows ``model_name`` version ``version`` answered; rows naming no registry version count as it."""
        frame = self.frame
        names = frame["model_name"].fillna(model_name)
        versions = frame["model_version"].where(frame["model_version"].fillna("").str.isdigit(), version)
        keep = (names == model_name) & (versions == version)
        return replace(self, frame=frame[keep].reset_index(drop=True))

    def of_classes(self, contract: TableContract) -> "LabeledRows":
        """The rows whose label names a class of ``contract`` (as its class's name); the others are counted."""
        classes = [contract.class_of(label) for label in self.frame[LABEL_COLUMN]]
        known = pd.Series([cls is not None for cls in classes], index=self.frame.index, dtype=bool)
        frame = self.frame.assign(**{LABEL_COLUMN: classes})[known].reset_index(drop=True)
        return replace(self, frame=frame, unknown=self.unknown + int((~known).sum()))

    def by_version(self) -> dict[str, int]:
        """Labeled rows per ``name/version``, as the report lists the versions not checked."""
        keys = self.frame["model_name"].fillna("?") + "/" + self.frame["model_version"].fillna("?")
        return {key: int(n) for key, n in sorted(keys.value_counts().items())}


def first_labels(labels: Iterable[dict]) -> tuple[dict[tuple[str, int], dict], int, int]:
    """The first label of each (request id, row), the number of labels read, and of duplicates."""
    first, read, duplicates = {}, 0, 0
    for label in labels:
        read += 1
        key = (label["request_id"], label["row"])
        if key in first:
            duplicates += 1
        else:
            first[key] = label
    return first, read, duplicates


def join(labels: Iterable[dict], predictions: Iterable[dict], skipped_labels: int = 0) -> LabeledRows:
    """Each first label with the prediction it names; ``predictions`` are streamed once, in log order."""
    return join_first(*first_labels(labels), predictions, skipped_labels)


def join_first(
    wanted: dict[tuple[str, int], dict],
    read: int,
    duplicates: int,
    predictions: Iterable[dict],
    skipped_labels: int = 0,
) -> LabeledRows:
    """``join`` with the first labels already picked (``first_labels``): a reader that streams predictions can
    skip every one whose request no label names."""
    chosen: dict[tuple[str, int], dict] = {}
    previous_request, position = None, 0
    for record in predictions:
        request_id = record.get("request_id")
        position = position + 1 if request_id == previous_request else 0
        previous_request = request_id
        key = (request_id, record.get("row", position))
        label = wanted.get(key)
        if label is None:
            continue
        if key not in chosen or _closer(record, chosen[key], label):
            chosen[key] = record
    rows, names = [], {}
    for key, record in chosen.items():
        label = wanted[key]
        names.update(dict.fromkeys(record["features"]))
        rows.append(
            {
                **record["features"],
                "prediction": record["prediction"],
                "confidence": record["confidence"],
                LABEL_COLUMN: label["label"],
                "model_name": record.get("model_name"),
                "model_version": record.get("model_version"),
                "request_id": key[0],
                "row": key[1],
                "ts": label.get("ts"),
            }
        )
    features = [name for name in names if name not in RECORD_COLUMNS]
    frame = pd.DataFrame(rows, columns=[*features, *RECORD_COLUMNS])
    return LabeledRows(frame, read, duplicates, len(wanted) - len(chosen), skipped_labels)


def _before(prediction: dict, label: dict) -> bool:
    """Logged at or before the label; a record without a time counts as before."""
    return (prediction.get("ts") or "") <= (label.get("ts") or "\uffff")


def _closer(candidate: dict, held: dict, label: dict) -> bool:
    """Whether ``candidate`` is the answer the label meant rather than ``held``: one logged before the label
    beats one after it; among those before, the latest; among those after, the earliest (whatever the file order)."""
    candidate_before, held_before = _before(candidate, label), _before(held, label)
    if candidate_before != held_before:
        return candidate_before
    candidate_ts, held_ts = candidate.get("ts") or "", held.get("ts") or ""
    return candidate_ts >= held_ts if candidate_before else candidate_ts < held_ts


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int  # labeled rows of this class


@dataclass(frozen=True)
class LivePerformance:
    """How one version did on its labeled rows."""

    status: PerformanceStatus
    rows: int
    accuracy: float | None = None
    classes: dict[str, ClassScores] = field(default_factory=dict)  # in the version's class order
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted, classes' order

    def reasons(self, thresholds: PerformanceThresholds) -> list[str]:
        if self.status != PerformanceStatus.PERFORMANCE_DROP:
            return []
        return [
            f"live accuracy {self.accuracy:.4f} < min_live_accuracy {thresholds.min_live_accuracy} "
            f"on {self.rows} labeled rows"
        ]


def assess_performance(
    labeled: pd.DataFrame, thresholds: PerformanceThresholds, classes: Sequence[str] = ()
) -> LivePerformance:
    """Accuracy, per-class scores and the confusion matrix of labeled rows; the verdict needs enough labels.

    ``classes`` are the version's; a version that names none is scored on the classes its rows hold.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    rows = len(labeled)
    if rows == 0:
        return LivePerformance(PerformanceStatus.INSUFFICIENT_LABELS, 0)
    truth, predicted = labeled[LABEL_COLUMN].astype(str), labeled["prediction"].astype(str)
    names = list(classes) or sorted(set(truth) | set(predicted))
    accuracy = float(accuracy_score(truth, predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=names, average=None, zero_division=0
    )
    scores = {
        name: ClassScores(float(p), float(r), float(f), int(s))
        for name, p, r, f, s in zip(names, precision, recall, f1, support)
    }
    confusion = confusion_matrix(truth, predicted, labels=names).tolist()
    if rows < thresholds.min_labeled_rows:
        status = PerformanceStatus.INSUFFICIENT_LABELS
    elif accuracy < thresholds.min_live_accuracy:
        status = PerformanceStatus.PERFORMANCE_DROP
    else:
        status = PerformanceStatus.NO_PERFORMANCE_DROP
    return LivePerformance(status, rows, accuracy, scores, confusion)


def estimated_accuracy(confidences: pd.Series) -> float | None:
    """The accuracy a calibrated classifier expects on these rows: the mean probability of its predicted class.

    Rows without a confidence (null) are left out; None when no row has one.
    """
    known = pd.to_numeric(confidences, errors="coerce").dropna()
    return float(known.mean()) if len(known) else None


def performance_metrics(performance: LivePerformance, labeled: LabeledRows) -> dict[str, float]:
    metrics = {
        "labeled_rows": performance.rows,
        "label_records": labeled.labels,
        "duplicate_labels": labeled.duplicates,
        "unmatched_labels": labeled.unmatched,
        "skipped_feedback_lines": labeled.skipped,
        "unknown_class_labels": labeled.unknown,
    }
    if performance.accuracy is None:
        return metrics
    metrics["live_accuracy"] = performance.accuracy
    metrics["performance_drop"] = float(performance.status == PerformanceStatus.PERFORMANCE_DROP)
    names = list(performance.classes)
    keys = {kind: metric_keys(f"live_{kind}_", names) for kind in ("precision", "recall", "f1", "support")}
    for name, scores in performance.classes.items():
        metrics.update(
            {
                keys["precision"][name]: scores.precision,
                keys["recall"][name]: scores.recall,
                keys["f1"][name]: scores.f1,
                keys["support"][name]: scores.support,
            }
        )
    return metrics


def performance_lines(
    performance: LivePerformance,
    labeled: LabeledRows,
    thresholds: PerformanceThresholds,
    *,
    version: str,
    source: str,
    other_versions: dict[str, int],
) -> list[str]:
    """The report's section on labels: counts, the verdict and its rule, per-class scores, the confusion matrix."""
    lines = ["", f"## Live performance: {performance.status}", ""]
    lines.append(
        f"- feedback log: `{source}`: {labeled.labels} labels, {performance.rows} of them for rows version "
        f"{version} answered; {labeled.duplicates} duplicates, {labeled.unmatched} matching no logged prediction "
        f"(not guessed), {labeled.skipped} unreadable lines skipped"
        + (f", {labeled.unknown} naming no class of the version left out" if labeled.unknown else "")
    )
    if other_versions:
        others = ", ".join(f"{key}: {n}" for key, n in other_versions.items())
        lines.append(f"- labeled rows of other versions, not counted here ({others})")
    lines.append(
        f"- rule: a performance drop when live accuracy < {thresholds.min_live_accuracy} "
        f"on at least {thresholds.min_labeled_rows} labeled rows"
    )
    if performance.accuracy is None:
        lines += ["", "No labeled rows of this version."]
        return lines
    lines += ["", f"Live accuracy: {performance.accuracy:.4f} on {performance.rows} labeled rows."]
    if performance.status == PerformanceStatus.INSUFFICIENT_LABELS:
        lines.append(f"No verdict: at least {thresholds.min_labeled_rows} labeled rows needed (`min_labeled_rows`).")
    lines += ["", "| class | precision | recall | f1 | labeled rows |", "|---|---|---|---|---|"]
    for name, s in performance.classes.items():
        lines.append(f"| {name} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.support} |")
    names = list(performance.classes)
    lines += ["", "| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, counts in zip(names, performance.confusion):
        lines.append(f"| {name} | " + " | ".join(str(n) for n in counts) + " |")
    return lines


def estimate_lines(estimate: float | None, rows: int, held_out_accuracy: float | None) -> list[str]:
    """The report's line on the confidence-based estimate, labelled as one."""
    if estimate is None:
        return []
    against = f"; the gate measured {held_out_accuracy:.4f} on held-out data" if held_out_accuracy is not None else ""
    return [
        "",
        f"Estimated accuracy (an estimate, not a measurement: the mean confidence of {rows} predictions, "
        f"which a calibrated model's accuracy matches): {estimate:.4f}{against}.",
    ]
