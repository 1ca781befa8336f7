"""What every step's command line shares: the project's runner and the run a step logs to."""

import contextlib
import os

import click

from iris_core.command_line import run_command, setup_logging
from iris_core.contract import TRAINING_EXPERIMENT


def run(command: click.Command) -> None:
    """Run a step command: usage errors exit 2, expected failures exit 1, each as one line."""
    setup_logging()
    run_command(command)


@contextlib.contextmanager
def step_run(run_name: str, default_experiment: str = TRAINING_EXPERIMENT):
    """The run a step logs to: the one ``mlflow run`` created, or a new one in the step's experiment.

    ``mlflow run`` passes its run through ``MLFLOW_RUN_ID``; calling ``set_experiment`` then
    would fail, so the default experiment applies only to a step started directly.
    """
    import mlflow

    launched = "MLFLOW_RUN_ID" in os.environ
    chosen = any(k in os.environ for k in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"))
    if not launched and not chosen:
        mlflow.set_experiment(default_experiment)
    with mlflow.start_run(run_name=None if launched else run_name) as run:
        yield run
