"""Models registered the ordinary MLflow way, with no code of this project: what most MLflow users already have.

Each is a scikit-learn estimator logged with ``mlflow.sklearn.log_model``, a signature
inferred from its data and its predictions, and an input example, as MLflow's own
documentation writes it; a few are broken on purpose (no signature, a text input) to show
what is refused. ``build_plain_registry`` registers them all in the tracking store of the
current environment.
"""

import numpy as np
import orjson
import pandas as pd

from tests.helpers.tracking import sqlite_uri

# registered name -> what it is
IRIS_PLAIN = "iris_plain"  # scikit-learn's iris frame: feature names with spaces and parentheses, integer classes
FLOWERS = "flowers"  # version 1 reads the four measurements, version 2 only the two petal ones; @champion on 1
WINE_PLAIN = "wine_plain"  # 13 features (one named with a slash), scaled inside the model
COUNTS = "counts"  # integer features: its signature says long
UNSIGNED = "unsigned"  # logged without a signature
TEXTS = "texts"  # a signature with a string input


def iris_frame() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    return data.data, data.target


def wine_frame() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    return data.data, data.target


def _log(estimator, features: pd.DataFrame, target: pd.Series, name: str, signature: bool = True):
    import mlflow
    from mlflow.models import infer_signature

    fitted = estimator.fit(features, target)
    with mlflow.start_run():
        return mlflow.sklearn.log_model(
            fitted,
            name="model",
            signature=infer_signature(features, fitted.predict(features)) if signature else None,
            input_example=features.head(2) if signature else None,
            registered_model_name=name,
        )


def build_plain_registry() -> None:
    """Register every plain model in the current tracking store; ``flowers@champion`` is version 1."""
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_experiment("plain-models")
    features, target = iris_frame()
    _log(LogisticRegression(max_iter=500), features, target, IRIS_PLAIN)
    _log(LogisticRegression(max_iter=500), features, target, FLOWERS)
    petals = features[["petal length (cm)", "petal width (cm)"]]
    _log(LogisticRegression(max_iter=500), petals, target, FLOWERS)
    wine, wine_target = wine_frame()
    _log(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), wine, wine_target, WINE_PLAIN)
    millimetres = (features * 10).round().astype("int64").set_axis(["sl", "sw", "pl", "pw"], axis=1)
    _log(LogisticRegression(max_iter=1000), millimetres, target, COUNTS)
    _log(LogisticRegression(max_iter=500), features, target, UNSIGNED, signature=False)
    _log_text_model()
    client = mlflow.MlflowClient()
    for name in (IRIS_PLAIN, FLOWERS, WINE_PLAIN, COUNTS, UNSIGNED, TEXTS):
        client.set_registered_model_alias(name, "champion", "1")


def _log_text_model() -> None:
    import mlflow
    from mlflow.models import infer_signature

    class Length(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.array([len(text) for text in model_input["text"]])

    example = pd.DataFrame({"text": ["a", "bb"]})
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Length(),
            signature=infer_signature(example, np.array([1, 2])),
            registered_model_name=TEXTS,
        )


def mlflow_predict(registry_dir, uri: str, frame: pd.DataFrame) -> list:
    """What MLflow's own pyfunc answers for the frame, as JSON values."""
    import mlflow

    mlflow.set_tracking_uri(sqlite_uri(registry_dir))
    try:
        predictions = mlflow.pyfunc.load_model(uri).predict(frame)
    finally:
        mlflow.set_tracking_uri(None)  # later tests on this worker read their own store
    return orjson.loads(orjson.dumps(pd.Series(predictions).tolist()))
