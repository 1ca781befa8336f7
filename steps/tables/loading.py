"""Loading a table and checking it against its contract, with scikit-learn's bundled Iris as Iris's fallback.

Which contract a table is checked against (``TableSpec``): a contract a person wrote
(``--contract``), else the curated Iris contract when the label is Iris's and the model is
``iris`` (the defaults), else one inferred from the table (``steps.tables.checks``). A bad
table must never crash the pipeline and never be trained on, so every check raises
``DataValidationError`` naming it. The Iris table falls back to scikit-learn's copy with the
reason in the run's tags, unless ``strict`` makes that an error; any other table that is
missing or fails a check stops the step (exit 1) before a run exists.
"""

import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from iris_core.contract import DataSource, Tag
from iris_core.table.contract import TableContract, load_contract
from iris_core.table.iris import IRIS
from steps.common.config import DEFAULT_LABEL, TableSpec
from steps.common.errors import DataValidationError, InvalidParameter
from steps.tables.checks import MIN_ROWS, check_table, infer_contract, with_classes_of

_logger = logging.getLogger(__name__)

__all__ = ["MIN_ROWS", "LoadedData", "load_dataset", "log_dataset", "read_csv", "validate_frame"]

SKLEARN_SOURCE = "sklearn.datasets.load_iris"


@dataclass(frozen=True)
class LoadedData:
    """A checked frame (the contract's features, then its label), the contract it passed, and where it came from."""

    frame: pd.DataFrame
    source: DataSource
    uri: str  # the file path, or SKLEARN_SOURCE
    fallback_reason: str | None = None
    contract: TableContract = IRIS

    @property
    def label(self) -> str:
        return self.contract.label

    @property
    def features(self) -> list[str]:
        return list(self.contract.feature_names)

    @property
    def name(self) -> str:
        """What the table is called: the dataset input's name."""
        return self.contract.name or Path(self.uri).stem


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


def validate_frame(frame: pd.DataFrame, contract: TableContract = IRIS) -> pd.DataFrame:
    """Return the frame in canonical form (float features, class names) or raise; Iris's contract unless told."""
    return check_table(frame, contract)


def load_sklearn_iris() -> pd.DataFrame:
    """The bundled copy ships inside scikit-learn, so it needs no network or file."""
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(list(IRIS.feature_names), axis=1).astype("float64")
    frame[IRIS.label] = [IRIS.classes[i] for i in bunch.target]
    return frame


def load_dataset(spec: TableSpec | str | Path, strict: bool = False) -> LoadedData:
    """Load the table and check it against its contract; Iris falls back to the bundled copy and says why."""
    if not isinstance(spec, TableSpec):
        spec = TableSpec(str(spec), strict=strict)
    if spec.curated_iris:
        return _load_iris(spec.data_path, spec.strict)
    written = written_contract(spec) if spec.contract else None
    path = spec.data_path
    try:
        raw = read_csv(path)
        if written is not None:
            frame = check_table(raw, written)
            contract = with_classes_of(written, frame[written.label])
        else:
            contract, frame = infer_contract(raw, spec.label, name=Path(path).stem)
    except DataValidationError as exc:
        raise DataValidationError(f"data check failed for {path}: {exc}") from None
    return LoadedData(frame, DataSource.CSV, str(Path(path).resolve()), None, contract)


def written_contract(spec: TableSpec) -> TableContract:
    """The contract a person wrote, with its label: the one it names, or ``--label``.

    A ``--label`` other than the default must name the contract's label column.
    """
    contract = load_contract(spec.contract)
    if contract.label is None:
        return replace(contract, label=spec.label)
    if spec.label not in (DEFAULT_LABEL, contract.label):
        raise InvalidParameter(
            f"the contract {spec.contract} names the label column {contract.label!r}, --label says {spec.label!r}"
        )
    return contract


def _load_iris(path: str, strict: bool) -> LoadedData:
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
    """Log the frame as an MLflow dataset input of the active run, named after the table, with source and digest."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = Path(data.uri).as_uri() if data.source == DataSource.CSV else CodeDatasetSource({"loader": data.uri})
    with warnings.catch_warnings():
        # A local path matches both of MLflow's local sources; either is right.
        warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
        dataset = mlflow.data.from_pandas(data.frame, source=source, targets=data.label, name=data.name)
    mlflow.log_input(dataset, context=context)
    mlflow.set_tags(data_tags(data))
