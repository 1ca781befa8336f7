"""The model code of the versions registered before ``predict_columns`` existed, kept as it was.

``tests/unit/steps/batch/test_model_outputs.py`` registers a version with it, as MLflow copied it into
those versions, to check that they keep scoring and give the same answers. What follows is
that file's docstring and code, unchanged: a frozen copy of what ``steps/iris_model.py`` was
(now ``steps/training/iris_model.py``), which must never import or follow the current one.

The pyfunc model that MLflow logs, loads and serves (an MLflow "model from code").

The model itself returns what the API promises, one record per row: ``prediction``,
``prediction_index``, ``confidence`` and ``confidence_scores``. Keeping this in the model,
not in a server, means ``pyfunc.load_model``, ``mlflow models serve``, ``spark_udf`` and
batch scoring all give the same answer. MLflow copies this file into the model, so it
imports nothing from the project.
"""

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

ESTIMATOR_ARTIFACT = "estimator"
OUTPUT_COLUMNS = ["prediction", "prediction_index", "confidence", "confidence_scores"]


class IrisClassifier(PythonModel):
    """Wraps a fitted scikit-learn classifier; ``estimator`` stays reachable via unwrap_python_model()."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def load_context(self, context):
        self.estimator = mlflow.sklearn.load_model(context.artifacts[ESTIMATOR_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return explain_predictions(self.estimator, model_input)


def explain_predictions(estimator, features: pd.DataFrame) -> pd.DataFrame:
    """Class name, index, and probabilities for each row, in input order."""
    columns = list(estimator.feature_names_in_)
    probabilities = estimator.predict_proba(features[columns].astype("float64"))
    classes = [str(c) for c in estimator.classes_]
    best = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "prediction": [classes[i] for i in best],
            "prediction_index": best.astype("int64"),
            "confidence": probabilities[np.arange(len(best)), best].astype("float64"),
            "confidence_scores": [dict(zip(classes, map(float, row))) for row in probabilities],
        },
        columns=OUTPUT_COLUMNS,
    )


mlflow.models.set_model(IrisClassifier())
