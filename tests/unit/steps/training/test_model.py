"""Behavioural tests of the registered model, loaded the way users load it."""

import numpy as np
import pandas as pd
import pytest

from iris_core.table.iris import IRIS

CLASSES, FEATURES = IRIS.classes, IRIS.feature_names


@pytest.fixture(scope="module")
def champion(trained_registry):
    import mlflow

    from tests.helpers.tracking import sqlite_uri

    mlflow.set_tracking_uri(sqlite_uri(trained_registry))
    try:
        yield mlflow.pyfunc.load_model("models:/iris@champion")
    finally:
        mlflow.set_tracking_uri(None)


def rows(*values) -> pd.DataFrame:
    return pd.DataFrame(list(values), columns=list(FEATURES))


def test_clear_setosa_rows_are_setosa(champion):
    out = champion.predict(rows((5.1, 3.5, 1.4, 0.2), (4.7, 3.2, 1.3, 0.2), (5.0, 3.6, 1.4, 0.2)))
    assert list(out["prediction"]) == ["setosa"] * 3
    assert list(out["prediction_index"]) == [0, 0, 0]


def test_clear_virginica_row_is_virginica(champion):
    assert champion.predict(rows((7.7, 2.6, 6.9, 2.3)))["prediction"].tolist() == ["virginica"]


def test_output_has_one_record_per_row_with_the_promised_fields(champion):
    out = champion.predict(rows((5.1, 3.5, 1.4, 0.2), (6.0, 2.9, 4.5, 1.5)))
    records = out.to_dict(orient="records")
    assert len(records) == 2
    for record in records:
        assert set(record) == {"prediction", "prediction_index", "confidence", "confidence_scores"}
        assert set(record["confidence_scores"]) == set(CLASSES)


def test_confidence_scores_sum_to_one_and_prediction_is_their_argmax(champion):
    rng = np.random.default_rng(0)
    frame = rows(*rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], size=(50, 4)))
    for record in champion.predict(frame).to_dict(orient="records"):
        scores = record["confidence_scores"]
        assert sum(scores.values()) == pytest.approx(1.0)
        best = max(scores, key=scores.get)
        assert record["prediction"] == best
        assert record["prediction_index"] == CLASSES.index(best)
        assert record["confidence"] == pytest.approx(scores[best])


def test_predictions_do_not_depend_on_column_order(champion):
    frame = rows((5.1, 3.5, 1.4, 0.2), (6.7, 3.0, 5.2, 2.3))
    reordered = frame[list(reversed(FEATURES))]
    assert champion.predict(frame)["prediction"].tolist() == champion.predict(reordered)["prediction"].tolist()


def test_underlying_scikit_learn_estimator_stays_reachable(champion):
    estimator = champion.unwrap_python_model().estimator
    assert list(estimator.classes_) == list(CLASSES)
    assert estimator.predict_proba(rows((5.1, 3.5, 1.4, 0.2))).shape == (1, 3)
