"""What every step's command line shares: the project's runner, the run a step logs to, and its parameters."""

import contextlib
import logging
import os

import click

from iris_core.command_line import run_command, setup_logging
from iris_core.contract import TRAINING_EXPERIMENT

_logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default", where `mlflow run` puts a run given no experiment


def run(command: click.Command) -> None:
    """Run a step command: usage errors exit 2, expected failures exit 1, each as one line."""
    setup_logging()
    run_command(command)


@contextlib.contextmanager
def step_run(run_name: str, default_experiment: str = TRAINING_EXPERIMENT):
    """The run a step logs to: the one ``mlflow run`` created, or a new one in the step's experiment.

    ``mlflow run`` passes its run through ``MLFLOW_RUN_ID``; calling ``set_experiment`` then
    would fail, so the default experiment applies only to a step started directly. The run
    ``mlflow run`` made carries a random name (``nervous-gnat-40``) unless ``--run-name``
    chose one; the step gives it its own name instead, so the UI says what each run is.
    """
    import mlflow

    launched = "MLFLOW_RUN_ID" in os.environ
    chosen = any(k in os.environ for k in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"))
    if not launched and not chosen:
        mlflow.set_experiment(default_experiment)
    with mlflow.start_run(run_name=None if launched else run_name) as run:
        if launched:
            _name_launched_run(run, run_name, default_experiment)
        yield run


def _name_launched_run(run, run_name: str, default_experiment: str) -> None:
    import mlflow

    if is_generated_run_name(run.info.run_name):
        # `mlflow run` sets --run-name right after it starts the step, so a name it was given
        # either is already there (and kept) or arrives after this one (and wins).
        mlflow.MlflowClient().update_run(run.info.run_id, name=run_name)
    if run.info.experiment_id == DEFAULT_EXPERIMENT_ID:
        _logger.warning(
            "This run is in MLflow's experiment 'Default': `mlflow run` was given no --experiment-name "
            "(use --experiment-name %s)",
            default_experiment,
        )


def is_generated_run_name(name: str | None) -> bool:
    """Whether MLflow made the name up (``<adjective>-<noun>-<number>`` from its own word lists)."""
    from mlflow.utils import name_utils

    parts = (name or "").split("-")
    return (
        len(parts) == 3
        and parts[0] in name_utils._GENERATOR_PREDICATES
        and parts[1] in name_utils._GENERATOR_NOUNS
        and parts[2].isdigit()
    )


def log_params(params: dict) -> None:
    """Log the step's parameters on the active run, except those ``mlflow run`` logged already.

    ``mlflow run`` logs every ``-P`` value as typed (``logs/predictions.jsonl``,
    ``models:/iris@challenger``, ``.5``) before the step starts, and a logged parameter can
    never change. The step's own reading of a value (the absolute path, the version the
    alias named) is in its tags and report instead.
    """
    import mlflow

    logged = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({key: value for key, value in params.items() if key not in logged})
