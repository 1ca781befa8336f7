"""What every step's command line shares: one-line errors, exit codes and the run it logs to."""

import contextlib
import logging
import os

import click

from registry_tools.command_line import fail, run_command
from registry_tools.tracking import one_line
from steps.config import TRAINING_EXPERIMENT
from steps.errors import StepError

_logger = logging.getLogger(__name__)


def run(command: click.Command) -> None:
    """Run a step command: usage errors exit 2, expected failures exit 1, each as one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # urllib3 logs each bounded retry; an unreachable server is reported below in one line.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        run_command(command, StepError)
    except Exception as exc:
        from mlflow.exceptions import MlflowException  # imported late: a bad argument should not wait for MLflow

        if not isinstance(exc, MlflowException):
            raise
        fail(one_line(exc), 1)


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
