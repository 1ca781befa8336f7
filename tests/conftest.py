"""Shared fixtures: every test gets its own sqlite tracking store; expensive things are built once.

The session registry holds versions made by the real training code, built once and
copied (the sqlite file only; artifacts are read-only) into each test that needs it.
``tests/unit`` runs in this process; everything under ``tests/integration`` starts real
processes and counts as ``slow``.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.tables import WINE_CSV, WineStore, build_wine_store
from tests.helpers.tracking import (
    BIN,
    LEAKY_ENV,
    MLFLOW_EXPORTS,
    Registry,
    build_versions,
    shared_store,
    sqlite_uri,
)

INTEGRATION = Path(__file__).resolve().parent / "integration"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Every test under ``tests/integration`` is ``slow`` (so ``-m "not slow"`` leaves it out).

    pytest-xdist hands whole modules to its workers in this order: the ones with tests that
    start real MLflow processes go first, the README walk-through (the longest, ~4 min) first of
    all, so that the quick ones are left to fill the gaps at the end."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.slow)
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path not in slow_modules, item.path.name != "test_readme.py"))


@pytest.fixture(autouse=True)
def tracking_store(tmp_path, monkeypatch):
    """A fresh store per test; cwd moves there too, since MLflow puts artifacts under ./mlruns."""
    import mlflow

    for name in LEAKY_ENV:
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
    for name in MLFLOW_EXPORTS:
        os.environ.pop(name, None)


def _forget_active_experiment() -> None:
    """``mlflow.set_experiment`` (steps run in process call it) leaves the experiment's id in a
    module global that outlives the store it belongs to; MLflow has no public way to clear it."""
    import mlflow.tracking.fluent

    mlflow.tracking.fluent._active_experiment_id = None


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
    """Models registered the ordinary MLflow way, without this project's code (``tests.helpers.plain_models``)."""
    from tests.helpers.plain_models import build_plain_registry

    return shared_store(tmp_path_factory, "plain-registry", build_plain_registry)


@pytest.fixture
def registry(trained_registry, tmp_path, tracking_store) -> Registry:
    """This test's own copy of the session registry, at this test's tracking URI."""
    shutil.copyfile(trained_registry / "mlflow.db", tmp_path / "mlflow.db")
    return Registry(uri=tracking_store)


@pytest.fixture
def champion(registry):
    """The registry's champion (version 2), loaded the way the batch pandas engine loads it."""
    import mlflow

    return mlflow.pyfunc.load_model("models:/iris/2")


@pytest.fixture(scope="session")
def wine_store(tmp_path_factory) -> Path:
    """A store with a wine version the pipeline trained and a plain one (``tests.helpers.tables``)."""
    return shared_store(tmp_path_factory, "wine-registry", build_wine_store)


@pytest.fixture
def wine(wine_store, tmp_path, tracking_store) -> WineStore:
    """This test's own copy of the wine store, at this test's tracking URI."""
    shutil.copyfile(wine_store / "mlflow.db", tmp_path / "mlflow.db")
    return WineStore(tracking_store, wine_store / WINE_CSV)
