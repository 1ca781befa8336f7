"""Classification metrics and the confusion-matrix plot, the same for training, the gate and live traffic.

The classes are those of the version concerned (its contract's); per-class metric keys are
built from class names, so they go through ``steps.common.metric_names``.
"""

from collections.abc import Sequence

from steps.common.metric_names import metric_keys


def classification_metrics(y_true, y_pred, classes: Sequence[str]) -> dict[str, float]:
    """Weighted averages plus per-class f1, the numbers the gate and the registry list show."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1_score": float(f1),
    }
    per_class = f1_score(y_true, y_pred, labels=list(classes), average=None, zero_division=0)
    keys = metric_keys("f1_", classes)
    metrics.update({keys[name]: float(v) for name, v in zip(classes, per_class)})
    return metrics


def confusion_matrix_figure(y_true, y_pred, classes: Sequence[str], title: str = "Held-out confusion matrix"):
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(classes), display_labels=list(classes), colorbar=False
    )
    display.ax_.set_title(title)
    display.figure_.tight_layout()
    return display.figure_
