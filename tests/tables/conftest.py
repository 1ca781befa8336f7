"""Fixtures of the tests on other tables: a store with a wine version the pipeline trained and a plain model.

Built once per test run (``tests.conftest.shared_store``) and copied into each test that
needs it, as the Iris session registry is.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import shared_store
from tests.tables.tables import WINE_LABEL, register_plain_model, wine_frame, write_wine

WINE_CSV = "wine.csv"


def build_wine_store() -> None:
    """``wine`` version 1 through the whole pipeline (champion); ``wine_plain`` version 1, champion, logged the
    plain MLflow way."""
    import mlflow

    from steps.common.config import GateThresholds, TableSpec, TrainConfig
    from steps.main import run_pipeline

    csv = write_wine(Path(WINE_CSV).resolve())
    mlflow.set_experiment("iris-classification")
    with mlflow.start_run(run_name="pipeline"):
        run_pipeline(TableSpec(str(csv), WINE_LABEL, "wine"), TrainConfig(), "wine", GateThresholds())
    version = register_plain_model("wine_plain", wine_frame(), WINE_LABEL)
    mlflow.MlflowClient().set_registered_model_alias("wine_plain", "champion", version)


@pytest.fixture(scope="session")
def wine_store(tmp_path_factory) -> Path:
    return shared_store(tmp_path_factory, "wine-registry", build_wine_store)


@dataclass(frozen=True)
class WineStore:
    uri: str
    csv: Path  # the wine table the versions were trained on (read only)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


@pytest.fixture
def wine(wine_store, tmp_path, tracking_store) -> WineStore:
    """This test's own copy of the wine store, at this test's tracking URI."""
    shutil.copyfile(wine_store / "mlflow.db", tmp_path / "mlflow.db")
    return WineStore(tracking_store, wine_store / WINE_CSV)
