"""Entry point ``train``: fit the classifier, log everything, register a new version as challenger.

Writes to its run: params (``scaled`` among them), held-out metrics,
``confusion_matrix.png``, ``classification_report.txt``, the train and held-out splits
(read back by ``evaluate`` and ``monitor``), the dataset input named after the table, the
table contract as ``table_contract.yaml``, and the pyfunc model with its signature and,
in its MLflow metadata, the same contract (``iris_core.table.models``), so that any
process finds a version's contract from the registry alone.
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
from iris_core.table.contract import METADATA_KEY, TableContract
from steps.common import cli, options
from steps.common.config import TableSpec, TrainConfig
from steps.common.errors import StepError
from steps.tables.loading import LoadedData, load_dataset, log_dataset
from steps.training.classification import classification_metrics, confusion_matrix_figure
from steps.training.fitting import fit, is_scaled, split, trained_contract

_logger = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).parent / "training" / "iris_model.py"
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "pandas")
CONTRACT_ARTIFACT = "table_contract.yaml"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    version: str
    metrics: dict
    holdout: pd.DataFrame
    contract: TableContract

    @property
    def model_uri(self) -> str:
        return version_uri(self.model_name, self.version)


def log_pyfunc_model(estimator, train: pd.DataFrame, model_name: str | None, contract: TableContract | None = None):
    """Log the estimator wrapped in the pyfunc model, with the contract as its metadata, and register it.

    Returns MLflow's ModelInfo. Without a contract the version is logged as versions were
    before contracts existed (its signature alone says what it reads).
    """
    import mlflow
    from mlflow.models import infer_signature

    from steps.training.iris_model import ESTIMATOR_ARTIFACT, explain_predictions

    example = train[list(estimator.feature_names_in_)].head(3)
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
            metadata={METADATA_KEY: contract.as_dict()} if contract is not None else None,
        )


Splits = tuple[pd.DataFrame, pd.DataFrame]


def prepare(spec: TableSpec, config: TrainConfig) -> tuple[LoadedData, Splits]:
    """The checked table and its (train, held-out) split, before any run starts: a table that fails leaves none."""
    data = load_dataset(spec)
    return data, split(data.frame, config, data.label)


def train_and_register(
    data: LoadedData, config: TrainConfig, model_name: str, splits: Splits | None = None
) -> TrainResult:
    """Train inside the active run and register the model as a new challenger version."""
    train, holdout = splits if splits is not None else split(data.frame, config, data.label)
    cli.log_params(config.params())
    log_dataset(data)
    return fit_and_register(train, holdout, config, model_name, {Tag.DATA_SOURCE: data.source}, data.contract)


def fit_and_register(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    config: TrainConfig,
    model_name: str,
    version_tags: dict,
    contract: TableContract,
) -> TrainResult:
    """Fit on ``train``, log the held-out figures, both splits and the contract, register a challenger with
    ``version_tags``."""
    import mlflow
    from sklearn.metrics import classification_report

    from iris_core.alias_history import move_alias

    run = mlflow.active_run()
    features, label = list(contract.feature_names), contract.label
    estimator = fit(train, config, features, label)
    mlflow.log_param("scaled", is_scaled(estimator))
    logged = trained_contract(contract, train, estimator)
    known = tuple(str(c) for c in estimator.classes_)
    if set(known) != set(logged.classes):
        raise StepError(f"the model learnt the classes {list(known)}, the contract names {list(logged.classes)}")
    predicted = estimator.predict(holdout[features])
    metrics = classification_metrics(holdout[label], predicted, logged.classes)
    mlflow.log_metrics(metrics)
    figure = confusion_matrix_figure(
        holdout[label], predicted, logged.classes, title=f"{_title(logged)}: held-out confusion matrix"
    )
    mlflow.log_figure(figure, "confusion_matrix.png")
    mlflow.log_text(classification_report(holdout[label], predicted, digits=4), "classification_report.txt")
    mlflow.log_text(train.to_csv(index=False), TRAIN_SPLIT_ARTIFACT)
    mlflow.log_text(holdout.to_csv(index=False), HOLDOUT_SPLIT_ARTIFACT)
    mlflow.log_text(logged.to_yaml(), CONTRACT_ARTIFACT)
    info = log_pyfunc_model(estimator, train, model_name, logged)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in {**config.params(), **version_tags, Tag.TRAINING_RUN_ID: run.info.run_id}.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    move_alias(client, model_name, CHALLENGER, version, how=MoveKind.TRAIN, reason=f"trained in run {run.info.run_id}")
    _logger.info("Registered %s version %s (accuracy %.4f)", model_name, version, metrics["accuracy"])
    return TrainResult(run.info.run_id, model_name, version, metrics, holdout.reset_index(drop=True), logged)


def _title(contract: TableContract) -> str:
    return f"{contract.name.capitalize()} classifier" if contract.name else "Classifier"


@click.command(
    help="Train, log and register a classifier of the table (Iris by default); the new version gets the alias "
    "'challenger'."
)
@options.table
@options.strict
@options.training
@options.model_name
def main(data_path, label, contract, strict, config, model_name):
    spec = TableSpec(data_path, label, model_name, contract, strict).validated()
    data, splits = prepare(spec, config)
    with cli.step_run("train"):
        result = train_and_register(data, config, model_name, splits)
    click.echo(f"registered {result.model_uri} as @{CHALLENGER} (accuracy {result.metrics['accuracy']:.4f})")


if __name__ == "__main__":
    cli.run(main)
