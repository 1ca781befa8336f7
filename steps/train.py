"""Entry point ``train``: fit the classifier, log everything, register a new version as challenger.

Writes to its run: params, held-out metrics, ``confusion_matrix.png``,
``classification_report.txt``, the train and held-out splits (read back by ``evaluate``
and ``monitor``), the dataset input, and the pyfunc model with its signature.
"""

import importlib.metadata
import logging
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd

from steps import cli
from steps.config import (
    CHALLENGER,
    CLASSES,
    DEFAULT_DATA_PATH,
    DEFAULT_MODEL_NAME,
    FEATURES,
    HOLDOUT_SPLIT_ARTIFACT,
    LABEL,
    MODEL_ARTIFACT,
    TRAIN_SPLIT_ARTIFACT,
)
from steps.data import LoadedData, load_dataset, log_dataset
from steps.errors import InvalidParameter, StepError

_logger = logging.getLogger(__name__)

SOLVERS = ("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga")
MODEL_CODE = Path(__file__).with_name("iris_model.py")
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "pandas")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and split settings; built only through ``validated`` so bad values never reach a run."""

    max_iter: int = 200
    C: float = 1.0
    solver: str = "lbfgs"
    random_state: int = 42
    test_size: float = 0.2

    def validated(self) -> "TrainConfig":
        if self.max_iter < 1:
            raise InvalidParameter(f"max_iter must be a positive integer, got {self.max_iter}")
        if not (math.isfinite(self.C) and self.C > 0):
            raise InvalidParameter(f"C must be a positive number, got {self.C}")
        if self.solver not in SOLVERS:
            raise InvalidParameter(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if not 0 < self.test_size < 1:
            raise InvalidParameter(f"test_size must be between 0 and 1, got {self.test_size}")
        return self

    def params(self) -> dict:
        return {"model_type": "LogisticRegression", **self.__dict__}


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    version: str
    metrics: dict
    holdout: pd.DataFrame

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def split(frame: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            frame, test_size=config.test_size, random_state=config.random_state, stratify=frame[LABEL]
        )
    except ValueError as exc:  # too few rows of a class for a stratified split
        raise StepError(f"cannot split the data: {exc}") from None


def fit(train: pd.DataFrame, config: TrainConfig):
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression(
        max_iter=config.max_iter, solver=config.solver, C=config.C, random_state=config.random_state
    )
    return estimator.fit(train[list(FEATURES)], train[LABEL])


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Weighted averages plus per-class f1, the numbers the gate and the registry list show."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="weighted", zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1_score": float(f1),
    }
    per_class = f1_score(y_true, y_pred, labels=list(CLASSES), average=None, zero_division=0)
    metrics.update({f"f1_{name}": float(v) for name, v in zip(CLASSES, per_class)})
    return metrics


def confusion_matrix_figure(y_true, y_pred):
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(CLASSES), display_labels=list(CLASSES), colorbar=False
    )
    display.ax_.set_title("Iris classifier: held-out confusion matrix")
    display.figure_.tight_layout()
    return display.figure_


def log_pyfunc_model(estimator, train: pd.DataFrame, model_name: str):
    """Log the estimator wrapped in the pyfunc model and register it; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    from steps.iris_model import ESTIMATOR_ARTIFACT, explain_predictions

    example = train[list(FEATURES)].head(3)
    with warnings.catch_warnings():
        # prediction_index is an integer by design: it never holds a missing value.
        warnings.filterwarnings("ignore", message=".*Integer columns in Python.*")
        signature = infer_signature(example, explain_predictions(estimator, example))
    requirements = [f"{p}=={importlib.metadata.version(p)}" for p in MODEL_REQUIREMENTS]
    with tempfile.TemporaryDirectory() as tmp:
        estimator_dir = Path(tmp, ESTIMATOR_ARTIFACT)
        mlflow.sklearn.save_model(estimator, estimator_dir, pip_requirements=requirements)
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=MODEL_CODE,
            artifacts={ESTIMATOR_ARTIFACT: str(estimator_dir)},
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            registered_model_name=model_name,
        )


def train_and_register(data: LoadedData, config: TrainConfig, model_name: str) -> TrainResult:
    """Train inside the active run and register the model as a new challenger version."""
    import mlflow
    from sklearn.metrics import classification_report

    from registry_tools.aliases import move_alias

    run = mlflow.active_run()
    mlflow.log_params(config.params())
    log_dataset(data)
    train, holdout = split(data.frame, config)
    estimator = fit(train, config)
    predicted = estimator.predict(holdout[list(FEATURES)])
    metrics = classification_metrics(holdout[LABEL], predicted)
    mlflow.log_metrics(metrics)
    mlflow.log_figure(confusion_matrix_figure(holdout[LABEL], predicted), "confusion_matrix.png")
    mlflow.log_text(classification_report(holdout[LABEL], predicted, digits=4), "classification_report.txt")
    mlflow.log_text(train.to_csv(index=False), TRAIN_SPLIT_ARTIFACT)
    mlflow.log_text(holdout.to_csv(index=False), HOLDOUT_SPLIT_ARTIFACT)
    info = log_pyfunc_model(estimator, train, model_name)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in {**config.params(), "data_source": data.source, "training_run_id": run.info.run_id}.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    move_alias(client, model_name, CHALLENGER, version, how="train", reason=f"trained in run {run.info.run_id}")
    _logger.info("Registered %s version %s (accuracy %.4f)", model_name, version, metrics["accuracy"])
    return TrainResult(run.info.run_id, model_name, version, metrics, holdout.reset_index(drop=True))


@click.command(help="Train, log and register the Iris classifier; the new version gets the alias 'challenger'.")
@click.option("--data-path", default=DEFAULT_DATA_PATH, show_default=True, help="CSV to train on (falls back to scikit-learn's copy).")
@click.option("--max-iter", type=int, default=200, show_default=True)
@click.option("--C", "C", type=float, default=1.0, show_default=True, help="Inverse regularisation strength.")
@click.option("--solver", default="lbfgs", show_default=True, help=f"One of {', '.join(SOLVERS)}.")
@click.option("--test-size", type=float, default=0.2, show_default=True)
@click.option("--random-state", type=int, default=42, show_default=True)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
def main(data_path, max_iter, C, solver, test_size, random_state, model_name):
    config = TrainConfig(max_iter, C, solver, random_state, test_size).validated()
    data = load_dataset(data_path)
    with cli.step_run("train"):
        result = train_and_register(data, config, model_name)
    click.echo(f"registered {result.model_uri} as @{CHALLENGER} (accuracy {result.metrics['accuracy']:.4f})")


if __name__ == "__main__":
    cli.run(main)
