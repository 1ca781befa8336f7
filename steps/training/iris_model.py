"""The pyfunc model that MLflow logs, loads and serves (an MLflow "model from code").

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

    def predict_columns(self, model_input: pd.DataFrame) -> dict:
        """What ``predict`` returns, as arrays: batch scoring writes millions of rows without a dict per row."""
        return score_columns(self.estimator, model_input)


def score_columns(estimator, features: pd.DataFrame) -> dict:
    """``classes`` (names), ``probabilities`` (rows x classes), ``prediction_index`` and ``confidence`` per row."""
    columns = list(estimator.feature_names_in_)
    probabilities = estimator.predict_proba(features[columns].astype("float64"))
    best = probabilities.argmax(axis=1).astype("int64")
    return {
        "classes": [str(c) for c in estimator.classes_],
        "probabilities": probabilities,
        "prediction_index": best,
        "confidence": probabilities[np.arange(len(best)), best].astype("float64"),
    }


def explain_predictions(estimator, features: pd.DataFrame) -> pd.DataFrame:
    """Class name, index, and probabilities for each row, in input order."""
    scores = score_columns(estimator, features)
    classes = scores["classes"]
    return pd.DataFrame(
        {
            "prediction": [classes[i] for i in scores["prediction_index"].tolist()],
            "prediction_index": scores["prediction_index"],
            "confidence": scores["confidence"],
            "confidence_scores": [dict(zip(classes, row)) for row in scores["probabilities"].tolist()],
        },
        columns=OUTPUT_COLUMNS,
    )


mlflow.models.set_model(IrisClassifier())
