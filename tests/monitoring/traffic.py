"""Traffic for the monitoring tests, made with the pipeline's own split, estimator and model output."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from iris_core.records import encode, make_record
from iris_core.schema import FEATURES


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    estimator: object

    def scored(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows as the proxy logs them: features, predicted class and its probability."""
        from steps.iris_model import explain_predictions

        out = explain_predictions(self.estimator, rows[list(FEATURES)])
        return (
            rows[list(FEATURES)]
            .reset_index(drop=True)
            .assign(prediction=out["prediction"].to_numpy(), confidence=out["confidence"].to_numpy())
        )

    def shifted(self, feature: str, rows: int, seed: int) -> pd.DataFrame:
        """``rows`` Iris rows drawn with replacement, ``feature`` moved up by one training standard deviation."""
        from steps.data import load_sklearn_iris

        sample = load_sklearn_iris().sample(rows, replace=True, random_state=seed).reset_index(drop=True)
        sample[feature] = sample[feature] + self.train[feature].std()
        return sample


def make_split(seed: int) -> Split:
    """The training split, held-out split and estimator the pipeline makes with ``random_state=seed``."""
    from steps.config import TrainConfig
    from steps.data import load_sklearn_iris
    from steps.training import fit, split

    config = TrainConfig(random_state=seed)
    train, holdout = split(load_sklearn_iris(), config)
    return Split(train.reset_index(drop=True), holdout.reset_index(drop=True), fit(train, config))


def write_log(
    path: Path, scored: pd.DataFrame, model_version: str | None = "2", model_name: str = "iris", prefix: str = "req"
) -> Path:
    """Write scored rows in the proxy's prediction-log format, one request per row (``<prefix>-<i>``)."""
    with open(path, "ab") as log:
        for i, row in enumerate(scored.itertuples(index=False)):
            record = make_record(
                ts=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
                request_id=f"{prefix}-{i}",
                model_name=model_name,
                model_version=model_version,
                features=[getattr(row, f) for f in FEATURES],
                prediction=row.prediction,
                confidence=row.confidence,
                latency_ms=2.0,
            )
            log.write(encode(record))
    return path
