"""Traffic for the monitoring tests, made with the pipeline's own split, estimator and model output."""

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from iris_core.contract import HOLDOUT_SPLIT_ARTIFACT
from iris_core.records import encode, make_feedback_record, make_record
from iris_core.table.iris import IRIS

FEATURES = IRIS.feature_names


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    estimator: object

    def scored(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows as the proxy logs them: features, predicted class and its probability."""
        from steps.training.iris_model import explain_predictions

        out = explain_predictions(self.estimator, rows[list(FEATURES)])
        return (
            rows[list(FEATURES)]
            .reset_index(drop=True)
            .assign(prediction=out["prediction"].to_numpy(), confidence=out["confidence"].to_numpy())
        )

    def shifted(self, feature: str, rows: int, seed: int) -> pd.DataFrame:
        """``rows`` Iris rows drawn with replacement, ``feature`` moved up by one training standard deviation."""
        from steps.tables.loading import load_sklearn_iris

        sample = load_sklearn_iris().sample(rows, replace=True, random_state=seed).reset_index(drop=True)
        sample[feature] = sample[feature] + self.train[feature].std()
        return sample


def make_split(seed: int) -> Split:
    """The training split, held-out split and estimator the pipeline makes with ``random_state=seed``."""
    from steps.common.config import TrainConfig
    from steps.tables.loading import load_sklearn_iris
    from steps.training.fitting import fit, split

    config = TrainConfig(random_state=seed)
    train, holdout = split(load_sklearn_iris(), config, IRIS.label)
    estimator = fit(train, config, list(FEATURES), IRIS.label)
    return Split(train.reset_index(drop=True), holdout.reset_index(drop=True), estimator)


def write_log(
    path: Path,
    scored: pd.DataFrame,
    model_version: str | None = "2",
    model_name: str = "iris",
    prefix: str = "req",
    features: Sequence[str] = FEATURES,
) -> Path:
    """Write scored rows in the proxy's prediction-log format, one request per row (``<prefix>-<i>``).

    ``scored`` holds ``features``, ``prediction`` and ``confidence`` (None: a model that gives none).
    """
    values = scored[list(features)].to_numpy(dtype=float).tolist()
    confidences = [None if pd.isna(c) else float(c) for c in scored["confidence"]]
    with open(path, "ab") as log:
        for i, (row, prediction, confidence) in enumerate(zip(values, scored["prediction"], confidences)):
            record = make_record(
                ts=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
                request_id=f"{prefix}-{i}",
                model_name=model_name,
                model_version=model_version,
                features=row,
                names=features,
                prediction=prediction,
                confidence=confidence,
                latency_ms=2.0,
            )
            log.write(encode(record))
    return path


def new_cultivar(rows: int, seed: int) -> pd.DataFrame:
    """A setosa cultivar the pipeline never saw: wide sepals and versicolor-sized petals, called versicolor by it.

    Rounded to a millimetre, as measurements are; ``species`` is the truth.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    means = {
        "sepal_length": (5.0, 0.25),
        "sepal_width": (4.3, 0.15),
        "petal_length": (4.4, 0.25),
        "petal_width": (1.4, 0.12),
    }
    frame = pd.DataFrame({name: rng.normal(mean, sd, rows).round(1) for name, (mean, sd) in means.items()})
    return frame.assign(species="setosa")


# A setosa cultivar that looks like versicolor: (mean, sd) of each feature, as docs/feedback.md's client draws it.
LOOK_ALIKE_SHAPE = {
    "sepal_length": (5.7, 0.3),
    "sepal_width": (3.0, 0.25),
    "petal_length": (4.3, 0.3),
    "petal_width": (1.3, 0.15),
}


def look_alike_cultivar(rows: int, seed: int) -> pd.DataFrame:
    """A setosa cultivar with versicolor's size and shape, only its sepals a little wider: called versicolor by
    the pipeline, and told apart from versicolor only in part by a version trained on its labels, which then
    calls some true versicolor setosa. Rounded to a millimetre; ``species`` is the truth."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(mean, sd, rows).round(1) for name, (mean, sd) in LOOK_ALIKE_SHAPE.items()})
    return frame.assign(species="setosa")


def write_labels(path: Path, labels: list[tuple[str, int, str]], ts: str = "2026-01-02T00:00:00.000Z") -> Path:
    """Append ``(request_id, row, label)`` labels in the proxy's feedback-log format."""
    with open(path, "ab") as log:
        for request_id, row, label in labels:
            log.write(encode(make_feedback_record(ts=ts, request_id=request_id, row=row, label=label)))
    return path


def scored_by(version_uri: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with what the registered model answers for them, as the proxy would log them."""
    import mlflow

    out = mlflow.pyfunc.load_model(version_uri).predict(rows[list(FEATURES)])
    return rows.reset_index(drop=True).assign(
        prediction=out["prediction"].to_numpy(), confidence=out["confidence"].to_numpy()
    )


CAPTURE_START = 1_796_590_800.0  # 2026-12-06T09:00:00Z, the start of an hour


def write_capture(
    location: str | Path,
    scored: pd.DataFrame,
    *,
    replica: str = "web-1",
    model_version: str | None = "2",
    model_name: str = "iris",
    prefix: str = "req",
    first: int = 0,
    start: float = CAPTURE_START,
    spacing: float = 1.0,
    labels: list[tuple[str, int, str]] = (),
    labels_at: float | None = None,
    file_rows: int = 50_000,
    features: Sequence[str] = FEATURES,
) -> Path:
    """Scored rows captured as a proxy (replica ``replica``) captures them, one request per row
    (``<prefix>-<first + i>``, ``spacing`` seconds apart from ``start``), and labels it took at ``labels_at``."""
    import tempfile

    from serving.capture.offline import offline_capture

    values = scored[list(features)].to_numpy(dtype=float).tolist()
    confidences = [None if pd.isna(c) else float(c) for c in scored["confidence"]]
    with tempfile.TemporaryDirectory() as spool, offline_capture(str(location), spool, replica, file_rows) as capture:
        for i, (row, prediction, confidence) in enumerate(zip(values, scored["prediction"], confidences)):
            answer = {"prediction": prediction, "confidence": confidence}
            capture.predictions(
                start + i * spacing, f"{prefix}-{first + i}", features, [row], [answer], model_name, model_version
            )
        if labels:
            at = labels_at if labels_at is not None else start + len(values) * spacing
            capture.labels(at, [(request_id, row, label, None) for request_id, row, label in labels], model_name)
    return Path(location)


def holdout_of(registry, version: str) -> pd.DataFrame:
    import mlflow

    run_id = registry.client().get_model_version("iris", version).run_id
    return pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/{HOLDOUT_SPLIT_ARTIFACT}")))


def served_traffic(registry, version: str, shift: str | None = None, rows: int | None = None) -> pd.DataFrame:
    """The version's held-out rows (resampled to ``rows`` and shifted on request), scored by the version itself."""
    import io

    import mlflow

    client = registry.client()
    run_id = client.get_model_version(registry.model_name, version).run_id
    holdout = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/{HOLDOUT_SPLIT_ARTIFACT}")))
    frame = holdout[list(FEATURES)]
    if rows is not None:
        frame = frame.sample(rows, replace=rows > len(frame), random_state=0).reset_index(drop=True)
    if shift:
        frame = frame.assign(**{shift: frame[shift] + holdout[shift].std()})
    out = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{version}").predict(frame)
    return frame.assign(prediction=out["prediction"].to_numpy(), confidence=out["confidence"].to_numpy())
