"""Shared fixtures: every test gets its own sqlite tracking store; expensive things are built once.

The session registry holds versions made by the real training code, built once and
copied (the sqlite file only; artifacts are read-only) into each test that needs it.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Variables that `mlflow run` or a developer's shell may set and that would leak a test
# into another store, run or experiment.
_LEAKY_ENV = (
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "SERVING_API_TOKEN",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """pytest-xdist hands whole modules to its workers in this order: the ones with tests that
    start real MLflow processes go first, the README walk-through (the longest, ~4 min) first of
    all, so that the quick ones are left to fill the gaps at the end."""
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path not in slow_modules, item.path.name != "test_readme.py"))


def sqlite_uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def tracking_store(tmp_path, monkeypatch):
    """A fresh store per test; cwd moves there too, since MLflow puts artifacts under ./mlruns."""
    import mlflow

    for name in _LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)
    _forget_active_experiment()
    yield sqlite_uri(tmp_path)
    while mlflow.active_run():
        mlflow.end_run()
    _forget_active_experiment()
    mlflow.set_tracking_uri(None)  # a test that set one in process leaves the next test its own store
    # What MLflow exported during the test (set_experiment, start_run) was absent before it, so
    # monkeypatch has nothing to restore; left behind, it would point the next module's
    # fixtures at an experiment of this test's store.
    for name in _MLFLOW_EXPORTS:
        os.environ.pop(name, None)


def _forget_active_experiment() -> None:
    """``mlflow.set_experiment`` (steps run in process call it) leaves the experiment's id in a
    module global that outlives the store it belongs to; MLflow has no public way to clear it."""
    import mlflow.tracking.fluent

    mlflow.tracking.fluent._active_experiment_id = None


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


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory):
    """v1 and v2 pass the gate (champion ends on v2); v3 fails it (min_accuracy 1.01)."""
    return shared_store(
        tmp_path_factory,
        "session-registry",
        lambda: build_versions([{"C": 1.0}, {"C": 0.5}, {"C": 0.3, "min_accuracy": 1.01}]),
    )


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory):
    """Models registered the ordinary MLflow way, without this project's code (``tests.plain_models``)."""
    from tests.plain_models import build_plain_registry

    return shared_store(tmp_path_factory, "plain-registry", build_plain_registry)


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
                for leaky in _LEAKY_ENV:
                    patch.delenv(leaky, raising=False)
                patch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(directory))
                patch.chdir(directory)
                try:
                    build()
                finally:
                    for exported in _MLFLOW_EXPORTS:
                        os.environ.pop(exported, None)
            (directory / "built").touch()
    return directory


@pytest.fixture(scope="module")
def spark():
    """A local Spark session on two cores, bound to loopback; started once per module, since a JVM start is slow."""
    from steps.batch.spark_engine import spark_session

    with spark_session("local[2]", chunk_size=1000) as session:
        yield session


@pytest.fixture
def registry(trained_registry, tmp_path, tracking_store) -> Registry:
    """This test's own copy of the session registry, at this test's tracking URI."""
    shutil.copyfile(trained_registry / "mlflow.db", tmp_path / "mlflow.db")
    return Registry(uri=tracking_store)


# What MLflow itself exports into this process (set_experiment, start_run); a child that
# inherited them would log into another store's experiment or run.
_MLFLOW_EXPORTS = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def clean_env(extra: dict | None = None) -> dict:
    """This process's environment for a child process, without MLflow's in-process exports."""
    return {**{k: v for k, v in os.environ.items() if k not in _MLFLOW_EXPORTS}, **(extra or {})}


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
