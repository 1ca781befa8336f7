"""Row checks and output columns that both batch engines share, so they reject and score alike.

The checks are those of the model version's contract (``iris_core.table``), which the
serving proxy applies too: each of its features must be a number (text must look like
one), finite, and within the feature's hard rules (Iris: > 0 and <= 1e6; an integer type
wants an integer). A row that fails is not an error of the job: it goes to the rejects
file with every reason, one per column.

The checks run on whole columns (numpy and Arrow compute), never row by row: each feature
gets a code per row, and only the rows that fail get their reason text. ``check_batch``
takes an Arrow record batch (the pandas engine); ``check_chunk`` a pandas chunk, which is
what Spark hands a pandas UDF. Both apply the same column functions.
"""

import csv
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from iris_core.table.contract import TableContract
from iris_core.table.rules import NOT_A_NUMBER_TEXT, NOT_FINITE, NUMBER, Rule, number_problem
from steps.batch.job import INPUT_FILE, INPUT_LINE, INPUT_ROW
from steps.batch.job import file_format as file_format  # where the row checks' callers have always found it
from steps.common.errors import StepError
from steps.tables.value_rules import passes

REASON = "reject_reason"
# Spark's name for a CSV line that does not split into the header's fields.
CORRUPT_RECORD = "_corrupt_record"
MAX_REASON_TEXT = 200

# What is wrong with one value, as a code per row; 0 passes.
PASSES, MISSING, TEXT, INFINITE, OUT_OF_RANGE, WRONG_TYPE = range(6)
_NUMBER_TEXT = f"^{NUMBER.pattern}$"


def check_input_columns(names: list[str], contract: TableContract, outputs: Sequence[str]) -> None:
    """Whole-file problems fail the job: no row of such a file could be scored or rejected sensibly.

    ``outputs`` are the columns the model's answers go to.
    """
    features = contract.feature_names
    if missing := [name for name in features if name not in names]:
        needs = ", ".join(features) if len(features) <= 8 else f"{len(features)} features"
        raise StepError(f"input has no column {', '.join(missing[:5])} (it needs {needs})")
    reserved = (*outputs, REASON, INPUT_FILE, INPUT_LINE, INPUT_ROW, CORRUPT_RECORD)
    if clashes := [name for name in reserved if name in names]:
        raise StepError(f"input already has column {', '.join(clashes)}, which the output would overwrite")
    if len(set(names)) != len(names):
        raise StepError("input has repeated column names")


@dataclass(frozen=True)
class Checked:
    """One feature column after the checks: its values (NaN where they fail) and a code per row."""

    values: np.ndarray
    codes: np.ndarray
    parsed: np.ndarray  # the values as read, for the reason of OUT_OF_RANGE
    rule: Rule  # the feature's rules, for the reason of OUT_OF_RANGE
    type_name: str = ""  # the column's type, named in the reason of WRONG_TYPE


def check_batch(batch: pa.RecordBatch, contract: TableContract) -> tuple[dict[str, np.ndarray], pa.Array | None]:
    """The batch's features as float64 arrays and, per row, the joined reasons it fails (null when it passes).

    The reasons are None when every row passes, the common case, so that nothing is built for them.
    """
    checked = {rule.name: check_arrow_column(batch.column(rule.name), rule) for rule in contract.rules}
    return {name: c.values for name, c in checked.items()}, reasons(checked)


def check_chunk(
    chunk: pd.DataFrame, contract: TableContract, header_width: int | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """The chunk's features as float64 and, per row, the joined reasons it fails (None when it passes).

    ``header_width`` is the number of fields in the input's header, for the malformed-line
    reason when the chunk carries Spark's corrupt-record column.
    """
    checked = {rule.name: check_pandas_column(chunk[rule.name], rule) for rule in contract.rules}
    found = reasons(checked)
    joined = np.full(len(chunk), None, dtype=object) if found is None else found.to_numpy(zero_copy_only=False)
    if CORRUPT_RECORD in chunk.columns:
        width = header_width or len(chunk.columns) - 1
        texts = chunk[CORRUPT_RECORD].to_numpy()
        for index in np.flatnonzero(chunk[CORRUPT_RECORD].notna().to_numpy()):
            joined[index] = malformed_reason(_field_count(texts[index]), width, texts[index])
    frame = pd.DataFrame(
        {name: c.values for name, c in checked.items()}, index=chunk.index, columns=list(contract.feature_names)
    )
    return frame, pd.Series(joined, index=chunk.index, dtype=object)


def check_arrow_column(column: pa.Array | pa.ChunkedArray, rule: Rule) -> Checked:
    """Typed numbers and text are checked in Arrow and numpy; any other type goes the pandas way."""
    kind = column.type
    if pa.types.is_floating(kind) or pa.types.is_integer(kind):
        values = column.to_numpy(zero_copy_only=False).astype("float64", copy=True)  # nulls become NaN
        return _checked_numbers(values, np.isnan(values), rule)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _checked_text(column, rule)
    return check_pandas_column(column.to_pandas(), rule)


def check_pandas_column(column: pd.Series, rule: Rule) -> Checked:
    if pd.api.types.is_bool_dtype(column) or not (
        pd.api.types.is_numeric_dtype(column) or pd.api.types.is_string_dtype(column) or column.dtype == object
    ):
        missing = column.isna().to_numpy()
        codes = np.where(missing, MISSING, WRONG_TYPE).astype(np.uint8)
        values = np.full(len(column), np.nan)
        return Checked(values, codes, values, rule, str(column.dtype))
    if pd.api.types.is_numeric_dtype(column):
        values = column.astype("float64").to_numpy(na_value=np.nan, copy=True)
        return _checked_numbers(values, column.isna().to_numpy(), rule)
    return _checked_text(pa.array(column.astype("str"), type=pa.large_string()), rule)


def _checked_numbers(values: np.ndarray, missing: np.ndarray, rule: Rule, codes: np.ndarray | None = None) -> Checked:
    """The feature's rules on float64 values: ``missing`` rows and rows already coded keep their code."""
    codes = np.zeros(len(values), dtype=np.uint8) if codes is None else codes
    codes[missing] = MISSING
    ok = passes(rule, values)  # False for NaN and infinity
    if not ok.all():
        unchecked = codes == PASSES
        finite = np.isfinite(values)
        codes[unchecked & ~finite] = INFINITE
        codes[unchecked & finite & ~ok] = OUT_OF_RANGE
    if not codes.any():
        return Checked(values, codes, values, rule)
    return Checked(np.where(codes == PASSES, values, np.nan), codes, values, rule)


def _checked_text(text: pa.Array | pa.ChunkedArray, rule: Rule) -> Checked:
    """Text features: a value counts as a number only if it looks like one (no 'nan', 'inf', '0x1p3').

    Arrow's compute kernels do the matching and parsing. ``NUMBER`` allows only ASCII
    blanks around a number, so trimming those is enough before parsing; what is blank in
    Unicode's sense counts as missing, which is asked only of the values that do not match.
    """
    looks_numeric = pc.fill_null(pc.match_substring_regex(text, _NUMBER_TEXT), False)
    numbers = pc.ascii_trim_whitespace(text)
    codes = np.zeros(len(text), dtype=np.uint8)
    if looks_numeric.true_count < len(text):
        numbers = pc.if_else(looks_numeric, numbers, pa.scalar(None, numbers.type))
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), False).to_numpy(zero_copy_only=False)
        valid = text.is_valid().to_numpy(zero_copy_only=False)
        codes[valid & ~blank & ~looks_numeric.to_numpy(zero_copy_only=False)] = TEXT
        codes[blank] = MISSING
    values = pc.cast(numbers, pa.float64()).to_numpy(zero_copy_only=False).astype("float64", copy=True)
    return _checked_numbers(values, text.is_null().to_numpy(zero_copy_only=False), rule, codes)


def reasons(checked: dict[str, Checked]) -> pa.Array | None:
    """Per row, every failing column with its problem, joined by '; ' (null where the row passes)."""
    failing = np.zeros(len(next(iter(checked.values())).codes), dtype=bool)
    for column in checked.values():
        failing |= column.codes != PASSES
    if not failing.any():
        return None
    where = np.flatnonzero(failing)
    parts = [_problems(name, column, where) for name, column in checked.items()]
    joined = pc.binary_join_element_wise(*parts, "; ", null_handling="skip")
    return pc.replace_with_mask(pa.nulls(len(failing), pa.string()), pa.array(failing), joined)


def _problems(name: str, column: Checked, rows: np.ndarray) -> pa.Array:
    """'name: problem' for each of ``rows``, null where that value passes."""
    codes = column.codes[rows]
    words = [None, "missing", NOT_A_NUMBER_TEXT, NOT_FINITE, None, f"must be a number, got {column.type_name}"]
    problems = pc.take(pa.array(words, pa.string()), pa.array(codes))
    if (out_of_range := codes == OUT_OF_RANGE).any():
        texts = [number_problem(v, column.rule, digits=10) for v in column.parsed[rows[out_of_range]]]
        problems = pc.replace_with_mask(problems, pa.array(out_of_range), pa.array(texts, pa.string()))
    return pc.binary_join_element_wise(f"{name}: ", problems, "")


def _field_count(line: str) -> int:
    return len(next(csv.reader([line]), []))


def malformed_reason(fields: int, expected: int, text: str) -> str:
    """The same words for a malformed CSV line whichever engine found it."""
    shown = text if len(text) <= MAX_REASON_TEXT else text[: MAX_REASON_TEXT - 3] + "..."
    return f"malformed CSV row: {fields} fields, the header has {expected}: {shown}"
