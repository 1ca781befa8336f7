"""What a batch job is asked to do, checked before anything is imported, resolved or loaded.

``BatchJob`` holds the entry point's settings with their defaults; ``validated`` refuses a
bad value (exit 2) and ``check_files`` a missing input or an output that exists already
(exit 1), both in milliseconds: this module imports nothing heavier than the standard
library, so a mistyped path never waits for MLflow, pandas or a model. ``Tally`` is what
a job counts as it goes.
"""

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from iris_core.refs import CHAMPION, DEFAULT_MODEL_NAME, alias_uri, is_registry_uri
from steps.common.errors import InvalidParameter, StepError

ENGINES = ("pandas", "spark")
DEFAULT_CHUNK_SIZE = 100_000
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Where a reject was in the input: its line in a CSV file (the header is line 1), its row in a Parquet file (from 0).
INPUT_LINE = "input_line"
INPUT_ROW = "input_row"
INPUT_FILE = "input_file"  # Spark, for a directory of part files


@dataclass(frozen=True)
class BatchJob:
    """What to score and how; built only through ``validated`` so a bad value never starts a run."""

    input: str
    output: str
    rejects: str = ""
    model_uri: str = alias_uri(DEFAULT_MODEL_NAME, CHAMPION)
    engine: str = "pandas"
    spark_master: str = "local[*]"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    overwrite: bool = False

    def validated(self) -> "BatchJob":
        from steps.registry.uris import check_model_uri

        if self.engine not in ENGINES:
            raise InvalidParameter(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.chunk_size < 1:
            raise InvalidParameter(f"chunk_size must be a positive integer, got {self.chunk_size}")
        if is_registry_uri(self.model_uri):
            check_model_uri(self.model_uri)
        file_format(self.input, "input")
        file_format(self.output, "output")
        rejects = self.rejects or default_rejects_path(self.output)
        file_format(rejects, "rejects")
        paths = {_normal(self.input), _normal(self.output), _normal(rejects)}
        if len(paths) != 3:
            raise InvalidParameter("input, output and rejects must be three different paths")
        return replace(self, rejects=rejects)

    def check_files(self) -> None:
        """The input is there, and no output would be replaced unless ``overwrite`` says so.

        Paths with a scheme (``s3://``, ``hdfs://``) are Spark's to find; they are not looked at here.
        """
        source = Path(self.input)
        if not is_uri(self.input):
            if self.engine == "pandas" and not source.is_file():
                raise StepError(f"input not found or not a file: {self.input}")
            if not source.exists():
                raise StepError(f"input not found: {self.input}")
        if self.overwrite:
            return
        existing = [path for path in (self.output, self.rejects) if not is_uri(path) and Path(path).exists()]
        if existing:
            names = " and ".join(existing)
            them = "them" if len(existing) > 1 else "it"
            raise StepError(
                f"{names} already exist{'' if len(existing) > 1 else 's'}; "
                f"pass --overwrite (mlflow run: -P overwrite=true) to replace {them}"
            )


def default_rejects_path(output: str) -> str:
    """``scores.csv`` -> ``scores.rejects.csv``, beside the output and in its format."""
    path = PurePosixPath(output.rstrip("/"))
    return str(path.with_name(f"{path.stem}.rejects{path.suffix}"))


def file_format(path: str, what: str = "input") -> str:
    """CSV or Parquet, by the path's extension (a Spark output directory is named the same way)."""
    suffix = PurePosixPath(str(path).rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidParameter(f"{what} must end in .csv or .parquet, got {path!r}")
    return FORMATS[suffix]


def position_column(input_path: str) -> str:
    """The rejects' column that says where each one was: a line of a CSV file, a row of a Parquet file."""
    return INPUT_LINE if file_format(input_path) == "csv" else INPUT_ROW


def is_uri(path: str) -> bool:
    """``s3://bucket/x``, ``hdfs:///x``, ``file:/x``: a location with a scheme rather than a local path."""
    return re.match(r"^[a-zA-Z][\w+.-]*:", path) is not None


def _normal(path: str) -> str:
    return str(PurePosixPath(path.rstrip("/")))


@dataclass
class Tally:
    """What a batch job counts as it goes; logged to MLflow at the end."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    classes: Counter = field(default_factory=Counter)
    seconds: float = field(default=0.0, compare=False)  # checking, scoring, writing; not model load or Spark start
    known_classes: tuple[str, ...] = field(default=(), compare=False)  # the version's, listed even when unpredicted

    def class_mix(self) -> dict[str, int]:
        """The count of each class: the version's (0 when none was predicted) and any other predicted."""
        return {name: int(self.classes.get(name, 0)) for name in sorted({*self.known_classes, *self.classes})}
