"""A temporary tracking store filled by the real pipeline, for the benchmarks that need a model."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import click

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def store_env(workdir: Path) -> dict:
    """This environment pointed at ``workdir/mlflow.db``, without the run or token a shell may carry."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "SERVING_API_TOKEN"):
        env.pop(name, None)
    return env


def train(workdir: Path, env: dict, *params: str) -> None:
    """One `mlflow run` of the pipeline (``params`` as ``-P`` pairs), which registers a version and gates it."""
    _logger.info("training a version with `mlflow run` %s in %s", " ".join(params), workdir)
    command = [
        str(BIN / "mlflow"),
        "run",
        str(REPO),
        "--env-manager",
        "local",
        "--experiment-name",
        "iris-classification",
        *params,
    ]
    completed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900, check=False)
    if completed.returncode != 0:
        raise click.ClickException(f"the pipeline failed: {completed.stderr.strip()[-800:]}")
