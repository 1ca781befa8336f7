"""What training adds to the contract and logs with each version, read back from the registry alone."""

import numpy as np
import pandas as pd
import pytest

from iris_core.table.contract import METADATA_KEY, TableContract
from iris_core.table.iris import IRIS
from steps.common.config import TrainConfig
from steps.registry.versions import read_version
from steps.train import CONTRACT_ARTIFACT
from steps.training.fitting import fit, is_scaled, needs_scaling, readiness_row
from tests.helpers.tables import SLASHED, WINE_LABEL, wine_features, wine_frame


def test_features_on_scales_ten_times_apart_are_scaled_inside_the_model_and_iris_is_not():
    from sklearn.datasets import load_iris

    assert needs_scaling(wine_frame()[wine_features()])
    assert not needs_scaling(load_iris(as_frame=True).data)
    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) * 9})
    assert not needs_scaling(frame) and needs_scaling(frame.assign(b=frame["b"] * 2))


def test_a_scaled_model_takes_raw_values_and_scores_as_well_as_its_pipeline():
    frame = wine_frame().assign(**{WINE_LABEL: lambda f: f[WINE_LABEL].astype(str)})
    estimator = fit(frame, TrainConfig(), wine_features(), WINE_LABEL)
    assert is_scaled(estimator) and [name for name, _ in estimator.steps] == ["standardscaler", "logisticregression"]
    assert list(estimator.feature_names_in_) == wine_features()
    assert (estimator.predict(frame[wine_features()]) == frame[WINE_LABEL]).mean() > 0.95


def test_the_readiness_row_is_the_training_row_the_model_is_surest_of_with_its_true_class():
    frame = wine_frame().assign(**{WINE_LABEL: lambda f: f[WINE_LABEL].astype(str)})
    estimator = fit(frame, TrainConfig(), wine_features(), WINE_LABEL)
    readiness = readiness_row(estimator, frame, wine_features(), WINE_LABEL)
    probabilities = estimator.predict_proba(frame[wine_features()])
    truth = frame[WINE_LABEL].map({c: i for i, c in enumerate(estimator.classes_)}).to_numpy()
    best = probabilities[np.arange(len(frame)), truth].argmax()
    assert readiness.row == tuple(frame[wine_features()].iloc[best]) and readiness.answer == frame[WINE_LABEL][best]
    assert estimator.predict(pd.DataFrame([readiness.row], columns=wine_features()))[0] == readiness.answer


def test_a_wine_version_carries_its_inferred_contract_in_its_model_metadata(wine):
    import mlflow

    version = read_version("models:/wine/1")
    contract = version.contract
    assert version.project_outputs and contract.origin == "inferred" and contract.label == WINE_LABEL
    assert contract.feature_names == tuple(wine_features()) and contract.classes == ("0", "1", "2")
    info = mlflow.models.get_model_info("models:/wine/1")
    assert TableContract.from_dict(info.metadata[METADATA_KEY]) == contract
    client = wine.client()
    run = client.get_run(client.get_model_version("wine", "1").run_id)
    train = pd.read_csv(client.download_artifacts(run.info.run_id, "data/train.csv"))
    observed = {f.name: f.observed for f in contract.features}
    assert observed[SLASHED] == (train[SLASHED].min(), train[SLASHED].max())
    assert contract.readiness.answer in contract.classes
    assert run.data.params["scaled"] == "True"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["wine"]
    written = client.download_artifacts(run.info.run_id, CONTRACT_ARTIFACT)
    assert TableContract.from_dict(__import__("yaml").safe_load(open(written))) == contract


def test_an_iris_version_keeps_its_curated_contract_with_the_training_ranges_and_no_scaler(registry):
    version = read_version("models:/iris/1")
    contract = version.contract
    assert contract.origin == "curated" and contract.readiness == IRIS.readiness and contract.layout == IRIS.layout
    assert [f.rules for f in contract.features] == [f.rules for f in IRIS.features]
    assert all(f.observed for f in contract.features) and contract.classes == IRIS.classes
    client = registry.client()
    run = client.get_run(client.get_model_version("iris", "1").run_id)
    assert run.data.params["scaled"] == "False"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["iris"]
    import mlflow

    estimator = mlflow.pyfunc.load_model("models:/iris/1").unwrap_python_model().estimator
    assert type(estimator).__name__ == "LogisticRegression"


@pytest.mark.parametrize("label, classes", [("a", ("x", "y")), ("b", ("0", "1"))])
def test_the_classes_the_model_learns_are_the_contracts(label, classes):
    frame = pd.DataFrame(
        {"f": np.linspace(0, 1, 20), label: [classes[0]] * 10 + [classes[1]] * 10},
    )
    estimator = fit(frame, TrainConfig(), ["f"], label)
    assert tuple(str(c) for c in estimator.classes_) == classes
