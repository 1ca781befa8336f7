"""The rows a version is judged on: the splits its training run logged, or a table checked against its contract.

A version the pipeline trained carries its training and held-out splits as run artifacts;
``evaluate`` scores the held-out one and ``monitor`` compares live traffic with the
training one. A version the pipeline did not train has neither, so both take a table a
person names instead (``--data-path``, ``--label``), checked against the version's
contract as training data is (``steps.tables.checks.select_table``).
"""

import io

import pandas as pd

from iris_core.table.contract import TableContract
from steps.common.errors import DataValidationError
from steps.tables.checks import select_table
from steps.tables.loading import read_csv


def read_split(text: str, label: str) -> pd.DataFrame:
    """A split the pipeline logged as CSV: its labels stay text (the class "0" is not the number 0)."""
    return pd.read_csv(io.StringIO(text), dtype={label: str}, keep_default_na=False)


def load_split(run_id: str | None, artifact: str, label: str) -> pd.DataFrame | None:
    """The split ``artifact`` the run logged; None when there is no run or it logged none."""
    import mlflow

    if not run_id:
        return None
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact}")
    except Exception:  # MLflow raises several kinds for an artifact that is not there
        return None
    return read_split(text, label)


def table_rows(data_path: str, label: str, contract: TableContract) -> pd.DataFrame:
    """The table given for a version without splits, checked against the version's contract; its label column last."""
    try:
        return select_table(read_csv(data_path), contract, label)
    except DataValidationError as exc:
        raise DataValidationError(f"data check failed for {data_path}: {exc}") from None
