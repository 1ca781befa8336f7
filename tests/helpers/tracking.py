"""The tracking stores the tests use and the ``mlflow`` command line of this environment.

Every test gets its own sqlite store (``tests/conftest.py``); the session's trained
versions are built once by the real pipeline code (``build_versions``) into a store that
``shared_store`` fills once per test run and each test copies.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from iris_core.contract import MONITORING_EXPERIMENT

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Variables that `mlflow run` or a developer's shell may set and that would leak a test
# into another store, run or experiment.
LEAKY_ENV = (
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "SERVING_API_TOKEN",
)

# What MLflow itself exports into this process (set_experiment, start_run); a child that
# inherited them would log into another store's experiment or run.
MLFLOW_EXPORTS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def sqlite_uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlflow.db'}"


@dataclass(frozen=True)
class Registry:
    """A tracking store holding the session's trained versions (see ``trained_registry``)."""

    uri: str
    model_name: str = "iris"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def build_versions(specs: list[dict]) -> None:
    """Train, register and gate one version per spec with the real pipeline code, in process."""
    import mlflow

    from steps.common.config import GateThresholds, TrainConfig
    from steps.main import run_pipeline

    try:
        mlflow.set_experiment("iris-classification")
        for spec in specs:
            config = TrainConfig(C=spec.get("C", 1.0), max_iter=spec.get("max_iter", 200))
            with mlflow.start_run(run_name="pipeline"):
                thresholds = GateThresholds(spec.get("min_accuracy", 0.9), 0.01)
                run_pipeline(str(REPO / "data" / "iris.csv"), config, "iris", thresholds)
    finally:
        # set_experiment exports MLFLOW_EXPERIMENT_ID; left behind, it would send later
        # processes to an experiment of this store.
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def shared_store(tmp_path_factory, name: str, build) -> Path:
    """A tracking store ``build`` fills once per test run, not once per pytest-xdist worker.

    The first worker to get here builds it under a file lock in the run's shared temporary
    directory, the others wait and read it. Tests copy its sqlite file before they write.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "built").exists():
            shutil.rmtree(directory, ignore_errors=True)  # a worker that failed half way
            directory.mkdir()
            with pytest.MonkeyPatch.context() as patch:
                for leaky in LEAKY_ENV:
                    patch.delenv(leaky, raising=False)
                patch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(directory))
                patch.chdir(directory)
                try:
                    build()
                finally:
                    for exported in MLFLOW_EXPORTS:
                        os.environ.pop(exported, None)
            (directory / "built").touch()
    return directory


def clean_env(extra: dict | None = None) -> dict:
    """This process's environment for a child process, without MLflow's in-process exports."""
    return {**{k: v for k, v in os.environ.items() if k not in MLFLOW_EXPORTS}, **(extra or {})}


def mlflow_run(
    entry: str, *params: str, cwd: Path, options: tuple[str, ...] = (), timeout: float = 300
) -> subprocess.CompletedProcess:
    """``mlflow run`` of this project's ``entry`` in this environment, each of ``params`` (``key=value``) one ``-P``."""
    args = ["run", str(REPO), "-e", entry, "--env-manager", "local", *options]
    for param in params:
        args += ["-P", param]
    return mlflow_cli(*args, cwd=cwd, timeout=timeout)


def mlflow_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``mlflow`` command line of this environment."""
    return subprocess.run(
        [str(BIN / "mlflow"), *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs(client, experiment: str, **tags):
    found = client.get_experiment_by_name(experiment)
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    return client.search_runs([found.experiment_id], query) if found else []


def monitoring_runs(client):
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []
