"""Loading and validating the Iris data, with scikit-learn's bundled copy as the fallback.

A bad CSV must never crash the pipeline and never be trained on, so every check raises
``DataValidationError`` with a reason that ends up in the run's tags. Where a bad CSV must
stop the line instead, ``strict`` turns the fallback into that error (exit 1).
"""

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from iris_core.contract import DataSource, Tag
from iris_core.schema import CLASSES, FEATURES, LABEL
from steps.errors import DataValidationError

_logger = logging.getLogger(__name__)

MIN_ROWS = 10
SKLEARN_SOURCE = "sklearn.datasets.load_iris"
_LABEL_ALIASES = (LABEL, "target")


@dataclass(frozen=True)
class LoadedData:
    """A validated frame and where it came from."""

    frame: pd.DataFrame
    source: DataSource
    uri: str  # the file path, or SKLEARN_SOURCE
    fallback_reason: str | None = None


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read the file, turning every I/O or parse problem into a named check."""
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"file not found: {path}")
    if not path.is_file():
        raise DataValidationError(f"not a regular file: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataValidationError(f"file is empty: {path}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataValidationError(f"not parseable as CSV: {str(exc).splitlines()[0]}") from None


def validate_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the frame in canonical form (float features, species names) or raise."""
    columns = [str(c).strip() for c in frame.columns]
    if len(columns) != len(FEATURES) + 1:
        raise DataValidationError(f"expected {len(FEATURES) + 1} columns, found {len(columns)}")
    label = next((c for c in _LABEL_ALIASES if c in columns), None)
    expected = set(FEATURES) | {label or LABEL}
    if label is None or set(columns) != expected:
        missing = sorted(expected - set(columns))
        unexpected = sorted(set(columns) - expected)
        raise DataValidationError(f"wrong column names: missing {missing}, unexpected {unexpected}")
    frame = frame.set_axis(columns, axis=1)
    for column in FEATURES:
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
            raise DataValidationError(f"feature column {column!r} is not numeric")
    nulls = [c for c in columns if frame[c].isna().any()]
    if nulls:
        raise DataValidationError(f"null values in columns {nulls}")
    if not all(math.isfinite(v) for v in frame[list(FEATURES)].to_numpy(dtype=float).ravel()):
        raise DataValidationError("non-finite feature values")
    if len(frame) < MIN_ROWS:
        raise DataValidationError(f"only {len(frame)} rows, need at least {MIN_ROWS}")
    species = _canonical_labels(frame[label])
    result = frame[list(FEATURES)].astype("float64")
    result[LABEL] = species
    return result.reset_index(drop=True)


def _canonical_labels(labels: pd.Series) -> list[str]:
    as_text = [_label_text(v) for v in labels]
    if set(as_text) <= set(CLASSES):
        return as_text
    by_index = {str(i): name for i, name in enumerate(CLASSES)}
    if set(as_text) <= set(by_index):
        return [by_index[v] for v in as_text]
    unknown = sorted(set(as_text) - set(CLASSES) - set(by_index))[:5]
    raise DataValidationError(f"unknown labels {unknown}")


def _label_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def load_sklearn_iris() -> pd.DataFrame:
    """The bundled copy ships inside scikit-learn, so it needs no network or file."""
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(list(FEATURES), axis=1).astype("float64")
    frame[LABEL] = [CLASSES[i] for i in bunch.target]
    return frame


def load_dataset(path: str | Path, strict: bool = False) -> LoadedData:
    """Load and validate the CSV, or fall back to the bundled copy and say why; ``strict`` fails instead."""
    try:
        frame = validate_frame(read_csv(path))
    except DataValidationError as exc:
        reason = str(exc)
        if strict:
            raise DataValidationError(f"data check failed for {path}: {reason} (strict: no fallback)") from None
        _logger.warning("Data check failed for %s (%s); using scikit-learn's bundled Iris", path, reason)
        return LoadedData(load_sklearn_iris(), DataSource.SKLEARN_FALLBACK, SKLEARN_SOURCE, reason)
    return LoadedData(frame, DataSource.CSV, str(Path(path).resolve()))


def data_tags(data: LoadedData) -> dict[str, str]:
    """Tags that let every model version say which data it was trained on."""
    tags = {Tag.DATA_SOURCE: data.source, Tag.DATA_URI: data.uri}
    if data.fallback_reason:
        tags[Tag.DATA_FALLBACK_REASON] = data.fallback_reason
    return tags


def log_dataset(data: LoadedData, context: str = "training") -> None:
    """Log the frame as an MLflow dataset input of the active run, with source and digest."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = Path(data.uri).as_uri() if data.source == DataSource.CSV else CodeDatasetSource({"loader": data.uri})
    with warnings.catch_warnings():
        # A local path matches both of MLflow's local sources; either is right.
        warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
        dataset = mlflow.data.from_pandas(data.frame, source=source, targets=LABEL, name="iris")
    mlflow.log_input(dataset, context=context)
    mlflow.set_tags(data_tags(data))
