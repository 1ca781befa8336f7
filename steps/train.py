"""Entry point ``train``: fit the classifier, log everything, register a new version as challenger.

Writes to its run: params, held-out metrics, ``confusion_matrix.png``,
``classification_report.txt``, the train and held-out splits (read back by ``evaluate``
and ``monitor``), the dataset input, and the pyfunc model with its signature.
"""

import importlib.metadata
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd

from iris_core.contract import HOLDOUT_SPLIT_ARTIFACT, MODEL_ARTIFACT, TRAIN_SPLIT_ARTIFACT, MoveKind, Tag
from iris_core.refs import CHALLENGER, version_uri
from iris_core.schema import FEATURES, LABEL
from steps import cli, options
from steps.classification import classification_metrics, confusion_matrix_figure
from steps.config import TrainConfig
from steps.data import LoadedData, load_dataset, log_dataset
from steps.training import fit, split

_logger = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("iris_model.py")
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "pandas")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    version: str
    metrics: dict
    holdout: pd.DataFrame

    @property
    def model_uri(self) -> str:
        return version_uri(self.model_name, self.version)


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
    cli.log_params(config.params())
    log_dataset(data)
    train, holdout = split(data.frame, config)
    return fit_and_register(train, holdout, config, model_name, {Tag.DATA_SOURCE: data.source})


def fit_and_register(
    train: pd.DataFrame, holdout: pd.DataFrame, config: TrainConfig, model_name: str, version_tags: dict
) -> TrainResult:
    """Fit on ``train``, log the held-out figures and both splits, register a challenger with ``version_tags``."""
    import mlflow
    from sklearn.metrics import classification_report

    from iris_core.alias_history import move_alias

    run = mlflow.active_run()
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
    for key, value in {**config.params(), **version_tags, Tag.TRAINING_RUN_ID: run.info.run_id}.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    move_alias(client, model_name, CHALLENGER, version, how=MoveKind.TRAIN, reason=f"trained in run {run.info.run_id}")
    _logger.info("Registered %s version %s (accuracy %.4f)", model_name, version, metrics["accuracy"])
    return TrainResult(run.info.run_id, model_name, version, metrics, holdout.reset_index(drop=True))


@click.command(help="Train, log and register the Iris classifier; the new version gets the alias 'challenger'.")
@options.data_path
@options.strict
@options.training
@options.model_name
def main(data_path, strict, max_iter, C, solver, test_size, random_state, model_name):
    config = TrainConfig(max_iter, C, solver, random_state, test_size).validated()
    data = load_dataset(data_path, strict)
    with cli.step_run("train"):
        result = train_and_register(data, config, model_name)
    click.echo(f"registered {result.model_uri} as @{CHALLENGER} (accuracy {result.metrics['accuracy']:.4f})")


if __name__ == "__main__":
    cli.run(main)
