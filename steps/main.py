"""Entry point ``main``: validate_data -> train -> evaluate as nested runs of one parent run.

The steps run in this one process and hand each other run IDs, model URIs and the
in-memory held-out split: MLflow's ~2 s import and the data loading are paid once,
not once per step. The table is loaded, checked and split before the parent run starts,
so a table that fails a check leaves no run behind.
"""

import click

from iris_core.contract import Tag
from steps.common import cli, options
from steps.common.config import GateThresholds, TableSpec, TrainConfig
from steps.evaluate import EvaluationResult, evaluate_version, raise_unless_passed, report
from steps.tables.loading import LoadedData, log_dataset
from steps.train import Splits, prepare, train_and_register

PIPELINE_RUN_NAME = "pipeline"  # the parent run; its nested runs are named for their steps


def run_pipeline(
    data: TableSpec | str | tuple[LoadedData, Splits],
    config: TrainConfig,
    model_name: str,
    thresholds: GateThresholds,
    strict: bool = False,
) -> EvaluationResult:
    """Run the three steps under the active run; returns the evaluation result.

    ``data`` is a table to load (a path: the Iris contract), or what ``steps.train.prepare`` made of one.
    """
    import mlflow

    if not isinstance(data, tuple):
        spec = data if isinstance(data, TableSpec) else TableSpec(str(data), model_name=model_name, strict=strict)
        data = prepare(spec, config)
    loaded, splits = data
    with mlflow.start_run(run_name="validate_data", nested=True):
        log_dataset(loaded, context="validation")
    with mlflow.start_run(run_name="train", nested=True):
        trained = train_and_register(loaded, config, model_name, splits)
    with mlflow.start_run(run_name="evaluate", nested=True):
        result = evaluate_version(mlflow.MlflowClient(), model_name, trained.version, trained.holdout, thresholds)
    mlflow.set_tags(
        {
            Tag.MODEL_URI: trained.model_uri,
            Tag.TRAINING_RUN_ID: trained.run_id,
            Tag.GATE_DECISION: result.decision.verdict,
        }
    )
    return result


@click.command(help="Run the whole pipeline: validate the data, train and register a challenger, evaluate and gate it.")
@options.table
@options.strict
@options.training
@options.model_name
@options.gate
def main(data_path, label, contract, strict, config, model_name, gate_thresholds):
    prepared = prepare(TableSpec(data_path, label, model_name, contract, strict).validated(), config)
    with cli.step_run(PIPELINE_RUN_NAME):
        result = run_pipeline(prepared, config, model_name, gate_thresholds)
    click.echo(report(result))
    raise_unless_passed(result)


if __name__ == "__main__":
    cli.run(main)
