"""Row checks and output columns that both batch engines share, so they reject and score alike.

The checks are the value rules of ``iris_core.schema``, which the serving proxy applies too:
a feature must be a number (text must look like one), finite, and in (0, MAX_VALUE]. A row that fails is not
an error of the job: it goes to the rejects file with every reason, one per column.
Everything here works on one pandas chunk, which is also what Spark hands ``mapInPandas``.
"""

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from iris_core.schema import (
    CLASSES,
    FEATURES,
    MAX_VALUE,
    NOT_A_NUMBER_TEXT,
    NOT_FINITE,
    NUMBER,
    OUTPUT_COLUMNS,
    number_problem,
)
from steps.errors import InvalidParameter, StepError

REASON = "reject_reason"
# Spark's name for a CSV line that does not split into the header's fields.
CORRUPT_RECORD = "_corrupt_record"
MAX_REASON_TEXT = 200


FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Tally:
    """What a batch job counts as it goes; logged to MLflow at the end."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    classes: Counter = field(default_factory=Counter)
    seconds: float = field(default=0.0, compare=False)  # checking, scoring, writing; not model load or Spark start

    def class_mix(self) -> dict[str, int]:
        return {name: int(self.classes.get(name, 0)) for name in sorted({*CLASSES, *self.classes})}


def file_format(path: str, what: str = "input") -> str:
    """CSV or Parquet, by the path's extension (a Spark output directory is named the same way)."""
    suffix = PurePosixPath(str(path).rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidParameter(f"{what} must end in .csv or .parquet, got {path!r}")
    return FORMATS[suffix]


def check_input_columns(names: list[str]) -> None:
    """Whole-file problems fail the job: no row of such a file could be scored or rejected sensibly."""
    if missing := [name for name in FEATURES if name not in names]:
        raise StepError(f"input has no column {', '.join(missing)} (it needs {', '.join(FEATURES)})")
    if clashes := [name for name in (*OUTPUT_COLUMNS, REASON, CORRUPT_RECORD) if name in names]:
        raise StepError(f"input already has column {', '.join(clashes)}, which the output would overwrite")
    if len(set(names)) != len(names):
        raise StepError("input has repeated column names")


def feature_values(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 (NaN where unusable) and, per row, what is wrong with it (None if nothing)."""
    problems = np.full(len(column), None, dtype=object)
    if pd.api.types.is_bool_dtype(column) or not (
        pd.api.types.is_numeric_dtype(column) or pd.api.types.is_string_dtype(column) or column.dtype == object
    ):
        values = np.full(len(column), np.nan)
        problems[column.notna().to_numpy()] = f"must be a number, got {column.dtype}"
    elif pd.api.types.is_numeric_dtype(column):
        values = column.astype("float64").to_numpy(na_value=np.nan, copy=True)
    else:
        values, problems = _text_values(column, problems)
    missing = column.isna().to_numpy()
    problems[missing] = "missing"
    present = ~missing & (problems == None)  # noqa: E711 (element-wise)
    with np.errstate(invalid="ignore"):
        infinite = present & ~np.isfinite(values)
        out_of_range = present & np.isfinite(values) & ~((values > 0) & (values <= MAX_VALUE))
    problems[infinite] = NOT_FINITE
    for index in np.flatnonzero(out_of_range):
        problems[index] = number_problem(values[index], digits=10)
    values[problems != None] = np.nan  # noqa: E711
    return values, problems


def _text_values(column: pd.Series, problems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Text features: a value counts as a number only if it looks like one (no 'nan', 'inf', '0x1p3').

    Arrow's compute kernels do the matching and parsing: ten times faster than pandas' str methods.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(column.astype("str"), type=pa.large_string())
    stripped = pc.utf8_trim_whitespace(text)
    blank = pc.fill_null(pc.equal(stripped, ""), False).to_numpy(zero_copy_only=False)
    problems[blank] = "missing"
    looks_numeric = pc.fill_null(pc.match_substring_regex(text, f"^{NUMBER.pattern}$"), False)
    wrong = text.is_valid().to_numpy(zero_copy_only=False) & ~blank & ~looks_numeric.to_numpy(zero_copy_only=False)
    problems[wrong] = NOT_A_NUMBER_TEXT
    parsed = pc.cast(pc.if_else(looks_numeric, stripped, pa.scalar(None, pa.large_string())), pa.float64())
    return parsed.to_numpy(zero_copy_only=False).astype("float64", copy=True), problems


def check_chunk(chunk: pd.DataFrame, header_width: int | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """The chunk's features as float64 and, per row, the joined reasons it fails (None when it passes).

    ``header_width`` is the number of fields in the input's header, for the malformed-line
    reason when the chunk carries Spark's corrupt-record column.
    """
    features, problems = {}, {}
    for name in FEATURES:
        features[name], problems[name] = feature_values(chunk[name])
    reasons = _malformed(chunk, header_width)
    failing = np.zeros(len(chunk), dtype=bool)
    for name in FEATURES:
        failing |= problems[name] != None  # noqa: E711 (element-wise)
    for index in np.flatnonzero(failing):
        if reasons[index] is None:
            found = [f"{name}: {problems[name][index]}" for name in FEATURES if problems[name][index] is not None]
            reasons[index] = "; ".join(found) or None
    frame = pd.DataFrame(features, index=chunk.index, columns=list(FEATURES))
    return frame, pd.Series(reasons, index=chunk.index, dtype=object)


def _malformed(chunk: pd.DataFrame, header_width: int | None) -> list[str | None]:
    """Spark marks a CSV line with the wrong number of fields; Arrow hands such lines over separately."""
    if CORRUPT_RECORD not in chunk.columns:
        return [None] * len(chunk)
    width = header_width or len(chunk.columns) - 1
    return [
        None if pd.isna(text) else malformed_reason(_field_count(text), width, text) for text in chunk[CORRUPT_RECORD]
    ]


def _field_count(line: str) -> int:
    return len(next(csv.reader([line]), []))


def malformed_reason(fields: int, expected: int, text: str) -> str:
    """The same words for a malformed CSV line whichever engine found it."""
    shown = text if len(text) <= MAX_REASON_TEXT else text[: MAX_REASON_TEXT - 3] + "..."
    return f"malformed CSV row: {fields} fields, the header has {expected}: {shown}"
