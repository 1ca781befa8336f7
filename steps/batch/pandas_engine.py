"""Engine ``pandas``: stream a CSV or Parquet file through the model one chunk at a time.

Arrow reads the input in record batches (``pyarrow.csv.open_csv`` for CSV, so a line with
the wrong number of fields becomes a reject instead of a parse error, and
``ParquetFile.iter_batches`` for Parquet) and writes each scored chunk at once, so memory
holds a few chunks (one read ahead, one being scored, two being written) however large the
file. Checks, scoring and the outputs work on whole
columns (``steps.batch.rows``, ``steps.batch.outputs``); the model gets one BLAS thread,
which is faster for its small matrices than a pool that fights the rest for the cores.
A thread reads the next chunk and another writes the last one while this one is checked
and scored (``steps.batch.threads``); Arrow works outside the GIL, so they overlap on two
cores. Rejects carry their line (CSV) or row (Parquet) in the input and come in input order,
malformed lines among them. Outputs are written next to their final path and renamed into
place only when the whole file is done.
"""

import contextlib
import csv
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from steps.batch.job import Tally, file_format, position_column
from steps.batch.lines import LineNumbers, LineScanner
from steps.batch.outputs import Predict, output_arrays, output_columns, plain_arrays, scores_struct
from steps.batch.progress import progress
from steps.batch.rows import REASON, check_batch, check_input_columns, malformed_reason
from steps.batch.threads import read_ahead, write_behind
from steps.common.errors import StepError
from steps.registry.versions import Version, model_input

_logger = logging.getLogger(__name__)


def output_schema(input_schema: pa.Schema, scores_as_json: bool, version: Version) -> pa.Schema:
    """Input columns (the version's features as float64), then the model's outputs: this project's four, or
    any other model's ``prediction``."""
    features = set(version.contract.feature_names)
    fields = [pa.field(f.name, pa.float64()) if f.name in features else f for f in input_schema]
    if not version.project_outputs:
        return pa.schema([*fields, ("prediction", pa.string())])
    scores = pa.string() if scores_as_json else scores_struct(version.contract.classes)
    return pa.schema(
        [
            *fields,
            ("prediction", pa.string()),
            ("prediction_index", pa.int64()),
            ("confidence", pa.float64()),
            ("confidence_scores", scores),
        ]
    )


def rejects_schema(input_schema: pa.Schema, position: str) -> pa.Schema:
    """The reason, where the row was in the input (``input_line`` or ``input_row``), then the row as read."""
    return pa.schema([(REASON, pa.string()), (position, pa.int64()), *input_schema])


@dataclass
class Rejected:
    """The rows of one batch that fail the checks: positions in the batch, reasons, and the rows as read."""

    positions: np.ndarray
    reasons: pa.Array
    rows: pa.RecordBatch


def score_file(
    input_path: str, output_path: str, rejects_path: str, predict: Predict, chunk_size: int, version: Version
) -> Tally:
    """Score every valid row of the input into the output; rows that break the version's contract go to the
    rejects file."""
    tally, started = Tally(known_classes=version.contract.classes), time.perf_counter()
    with _source(input_path, chunk_size) as source:
        check_input_columns(source.schema.names, version.contract, output_columns(version.project_outputs))
        scores_as_json = file_format(output_path, "output") == "csv"
        out_schema = output_schema(source.schema, scores_as_json, version)
        bad_schema = rejects_schema(source.schema, position_column(input_path))
        meter = progress("scoring")
        with (
            threadpool_limits(limits=1, user_api="blas"),
            _writer(output_path, out_schema) as write_out,
            _writer(rejects_path, bad_schema) as write_bad,
            write_behind() as put,
        ):
            records = 0
            for batch in source.batches:
                scored, rejected, classes = score_batch(batch, predict, out_schema, version)
                bad = source.rejects(records, batch.num_rows, rejected, bad_schema)
                put(write_out, scored)
                put(write_bad, bad)
                records += batch.num_rows
                tally.rows_read += batch.num_rows + bad.num_rows - len(rejected.positions)
                tally.rows_scored += scored.num_rows
                tally.rows_rejected += bad.num_rows
                tally.classes.update(classes)
                meter.update(source.fraction(records), f"{tally.rows_read:,} rows")
            rest = source.rest(bad_schema)
            put(write_bad, rest)
            tally.rows_read += rest.num_rows
            tally.rows_rejected += rest.num_rows
        meter.update(1.0, f"{tally.rows_read:,} rows")
        meter.finish()
    tally.seconds = time.perf_counter() - started
    return tally


def score_batch(batch: pa.RecordBatch, predict: Predict, out_schema: pa.Schema, version: Version):
    """One chunk: (scored rows, the rows that fail the checks, the count of each predicted class)."""
    contract = version.contract
    features, reasons = check_batch(batch, contract)
    if reasons is None:
        rejected = Rejected(np.zeros(0, np.int64), pa.array([], pa.string()), batch.slice(0, 0))
        good = batch
    else:
        bad = reasons.is_valid().to_numpy(zero_copy_only=False)
        positions = np.flatnonzero(bad)
        rejected = Rejected(positions, reasons.take(pa.array(positions)), batch.take(pa.array(positions)))
        good = batch.filter(pa.array(~bad))
        features = {name: values[~bad] for name, values in features.items()}
    if good.num_rows == 0:
        return out_schema.empty_table(), rejected, {}
    result = predict(model_input(features, contract))
    if version.project_outputs:
        as_json = pa.types.is_string(out_schema.field("confidence_scores").type)
        outputs, classes = output_arrays(result, as_json, contract.classes)
    else:
        outputs, classes = plain_arrays(result)
    columns = [pa.array(features[name]) if name in features else good.column(name) for name in good.schema.names]
    return pa.Table.from_arrays([*columns, *outputs], schema=out_schema), rejected, classes


def _rejects_table(schema: pa.Schema, where: np.ndarray, rejected: Rejected) -> pa.Table:
    return pa.Table.from_arrays([rejected.reasons, pa.array(where, pa.int64()), *rejected.rows.columns], schema=schema)


def _malformed_table(schema: pa.Schema, lines: np.ndarray, reasons: list[str]) -> pa.Table:
    """Lines Arrow could not split into the header's fields: their reason and line, nulls for their values."""
    nulls = [pa.nulls(len(reasons), f.type) for f in list(schema)[2:]]
    return pa.Table.from_arrays([pa.array(reasons, pa.string()), pa.array(lines, pa.int64()), *nulls], schema=schema)


@dataclass
class _Source:
    """An open input: its schema, its batches, how far it is read, and where its rejects were."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    fraction: Callable[[int], float]  # of the file, once so many records are done
    lines: LineNumbers | None = None  # CSV only

    def rejects(self, first: int, count: int, rejected: Rejected, schema: pa.Schema) -> pa.Table:
        """The batch's rejects with their place in the input; for CSV, with the malformed lines among them."""
        if self.lines is None:
            return _rejects_table(schema, first + rejected.positions, rejected)
        lines, malformed, reasons = self.lines.place(first, count, rejected.positions)
        table = _rejects_table(schema, lines, rejected)
        if not reasons:
            return table
        merged = pa.concat_tables([table, _malformed_table(schema, malformed, reasons)])
        return merged.take(pa.array(np.argsort(np.concatenate([lines, malformed]), kind="stable")))

    def rest(self, schema: pa.Schema) -> pa.Table:
        """Malformed lines after the last record."""
        if self.lines is None:
            return schema.empty_table()
        return _malformed_table(schema, *self.lines.rest())


@contextlib.contextmanager
def _source(path: str, chunk_size: int):
    """The open input; its batches are read a chunk ahead, in a thread, and stopped before the file is closed."""
    source = Path(path)
    if not source.is_file():
        raise StepError(f"input not found or not a file: {path}")
    try:
        if file_format(path) == "parquet":
            with contextlib.closing(pq.ParquetFile(source)) as parquet:
                total = max(parquet.metadata.num_rows, 1)
                with contextlib.closing(read_ahead(parquet.iter_batches(batch_size=chunk_size))) as batches:
                    yield _Source(parquet.schema_arrow, _guarded(batches, path), lambda records: records / total)
        else:
            names = _csv_header(source)
            size = max(source.stat().st_size, 1)
            with open(source, "rb") as handle:
                scanner = LineScanner(handle)
                lines = LineNumbers(scanner.empty_lines)
                with contextlib.closing(_csv_reader(scanner, names, chunk_size, lines)) as reader:
                    records = _CsvRecords(reader, chunk_size, scanner, size)
                    with contextlib.closing(read_ahead(iter(records))) as batches:
                        yield _Source(reader.schema, _guarded(batches, path), records.fraction, lines)
    except (pa.ArrowException, OSError) as exc:
        raise StepError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def _guarded(batches: Iterator[pa.RecordBatch], path: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except (pa.ArrowException, OSError) as exc:
        raise StepError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise StepError(f"input is not UTF-8 text: {path}") from None
    if not header:
        raise StepError(f"input has no header row: {path}")
    return header


def _csv_reader(scanner: LineScanner, names: list[str], chunk_size: int, lines: LineNumbers):
    def skip_malformed(row) -> str:
        lines.malformed.append((row.number, malformed_reason(row.actual_columns, row.expected_columns, row.text)))
        return "skip"

    return pacsv.open_csv(
        scanner,
        # One thread: Arrow then numbers the malformed lines, and meets them in input order.
        read_options=pacsv.ReadOptions(use_threads=False, block_size=min(max(chunk_size * 64, 1 << 16), 1 << 28)),
        parse_options=pacsv.ParseOptions(invalid_row_handler=skip_malformed),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=True, null_values=[""]
        ),
    )


class _CsvRecords:
    """Arrow's CSV batches cut to at most ``chunk_size`` rows, and how far into the file a number of them reach.

    Arrow cuts blocks by bytes and reads ahead, so the file's lines are estimated from the
    bytes per line of what it has read so far.
    """

    def __init__(self, reader, chunk_size: int, scanner: LineScanner, size: int):
        self.reader, self.chunk_size, self.scanner, self.size = reader, chunk_size, scanner, size

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self.reader:
            for start in range(0, batch.num_rows, self.chunk_size):
                yield batch.slice(start, self.chunk_size)

    def fraction(self, records: int) -> float:
        lines = self.scanner.lines_read * self.size / max(self.scanner.position, 1)
        return min(1.0, (records + 1) / max(lines, 1))


@contextlib.contextmanager
def _writer(path: str, schema: pa.Schema):
    """A write function for one output file, renamed into place only if everything succeeded."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    if file_format(path, "output") == "parquet":
        writer = pq.ParquetWriter(partial, schema)
    else:
        writer = pacsv.CSVWriter(partial, schema, write_options=pacsv.WriteOptions(quoting_style="needed"))

    def write(table: pa.Table) -> None:
        if table.num_rows:
            try:
                writer.write_table(table)
            except (pa.ArrowException, OSError) as exc:  # a full disk, a vanished directory
                raise StepError(f"cannot write {path}: {str(exc).splitlines()[0]}") from None

    try:
        yield write
        writer.close()
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(pa.ArrowException, OSError):
            writer.close()
        partial.unlink(missing_ok=True)
        raise
