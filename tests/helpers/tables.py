"""Tables other than Iris, written to CSV as a user would bring them, and helpers to train and serve on them.

Wine (scikit-learn's: 13 features, 3 classes written as the integers 0, 1, 2) gets two
columns renamed so that feature names hold a space and a slash, as real tables do.
Breast cancer (30 features, 2 classes, integer labels) is the binary case.
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

WINE_LABEL = "class"
SPACED = "malic acid"
SLASHED = "od280/od315 of diluted wines"
CANCER_LABEL = "diagnosis"
WINE_CSV = "wine.csv"  # in the wine store's directory (``tests/conftest.py``'s ``wine_store``)


def wine_frame() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    return frame.rename(columns={"malic_acid": SPACED, "od280/od315_of_diluted_wines": SLASHED, "target": WINE_LABEL})


def write_wine(path: Path, transform=None) -> Path:
    """The wine table as CSV at ``path``; ``transform`` may break it first."""
    frame = wine_frame()
    (transform(frame) if transform else frame).to_csv(path, index=False)
    return path


def wine_features() -> list[str]:
    return [name for name in wine_frame().columns if name != WINE_LABEL]


def write_breast_cancer(path: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": CANCER_LABEL})
    frame.to_csv(path, index=False)
    return path


def register_plain_model(name: str, frame: pd.DataFrame, label: str) -> str:
    """A scikit-learn model registered the ordinary MLflow way: no project code, an inferred signature.

    Returns its version.
    """
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = frame.drop(columns=[label])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, frame[label])
    with mlflow.start_run(run_name="plain"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features, model.predict(features)),
            registered_model_name=name,
        )
    return str(info.registered_model_version)


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


@dataclass(frozen=True)
class WineStore:
    uri: str
    csv: Path  # the wine table the versions were trained on (read only)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
