"""What a model version reads and answers, found from the registry alone.

Its contract is what ``iris_core.table.models.model_contract`` reads from the version's
``MLmodel`` file (``mlflow.models.get_model_info`` fetches only that file): the contract
this project's training logged in the model's metadata, else the one its signature
implies. Its answers are this project's records for a model the pipeline trained, and
whatever MLflow answers for any other (a class per row); ``answer_classes`` reads the class
out of either, as the serving proxy does.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from iris_core.table.contract import TableContract
from iris_core.table.models import answer_class, has_project_outputs, model_contract
from steps.common.errors import StepError

# The numpy type each MLflow column type is handed to a model as.
DTYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32"}


@dataclass(frozen=True)
class Version:
    """A logged model as the steps meet it: what it reads, and whether it answers this project's records."""

    contract: TableContract
    project_outputs: bool


def read_version(model_uri: str) -> Version:
    """The contract and the kind of answers of the model ``model_uri`` names (any MLflow model URI)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        info = mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as exc:
        raise StepError(f"cannot read the model {model_uri}: {str(exc).splitlines()[0][:200]}") from None
    signature = info.signature.to_dict() if info.signature is not None else None
    return Version(model_contract(info.metadata, signature), has_project_outputs(signature))


def version_contract(model_uri: str) -> TableContract:
    return read_version(model_uri).contract


def model_input(columns: pd.DataFrame | Mapping[str, np.ndarray], contract: TableContract) -> pd.DataFrame:
    """The contract's features of a frame (or of arrays by name), in its order, each as the type it declares."""
    return pd.DataFrame(
        {f.name: np.asarray(columns[f.name]).astype(DTYPES[f.type], copy=False) for f in contract.features}
    )


def answer_classes(output) -> list[str | None]:
    """The class of each row's answer, whatever a pyfunc model returned: this project's records (their
    ``prediction``), a frame or series of one column, or an array of classes."""
    if isinstance(output, pd.DataFrame):
        if "prediction" in output.columns:
            items = output["prediction"].tolist()
        elif len(output.columns) == 1:
            items = output.iloc[:, 0].tolist()
        else:
            items = output.to_dict(orient="records")
    elif isinstance(output, (pd.Series, np.ndarray)):
        items = output.tolist()
    else:
        items = list(output)
    return [answer_class(item) for item in items]


def predict_classes(model_uri: str, frame: pd.DataFrame, contract: TableContract) -> list[str | None]:
    """The class the registered model answers for each row of ``frame``, as served."""
    import mlflow

    return answer_classes(mlflow.pyfunc.load_model(model_uri).predict(model_input(frame, contract)))
