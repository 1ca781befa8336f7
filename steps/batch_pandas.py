"""Engine ``pandas``: stream a CSV or Parquet file through the model one chunk at a time.

Arrow reads the input in record batches (``pyarrow.csv.open_csv`` for CSV, so a line with
the wrong number of fields becomes a reject instead of a parse error, and
``ParquetFile.iter_batches`` for Parquet) and writes each scored chunk at once, so memory
holds one chunk however large the file. Checks, scoring and the outputs work on whole
columns (``steps.batch_rows``, ``steps.batch_outputs``); the model gets one BLAS thread,
which is faster for its small matrices than a pool that fights the rest for the cores.
Outputs are written next to their final path and renamed into place only when the whole
file is done.
"""

import contextlib
import csv
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from iris_core.schema import FEATURES
from steps.batch_outputs import Predict, output_arrays, scores_struct
from steps.batch_rows import (
    REASON,
    Tally,
    check_batch,
    check_input_columns,
    file_format,
    malformed_reason,
)
from steps.errors import StepError

_logger = logging.getLogger(__name__)


def output_schema(input_schema: pa.Schema, scores_as_json: bool) -> pa.Schema:
    """Input columns (features as float64), then the model's four outputs."""
    fields = [pa.field(f.name, pa.float64()) if f.name in FEATURES else f for f in input_schema]
    scores = pa.string() if scores_as_json else scores_struct()
    return pa.schema(
        [
            *fields,
            ("prediction", pa.string()),
            ("prediction_index", pa.int64()),
            ("confidence", pa.float64()),
            ("confidence_scores", scores),
        ]
    )


def rejects_schema(input_schema: pa.Schema) -> pa.Schema:
    return pa.schema([(REASON, pa.string()), *input_schema])


def score_file(input_path: str, output_path: str, rejects_path: str, predict: Predict, chunk_size: int) -> Tally:
    """Score every valid row of the input into the output; invalid rows go to the rejects file."""
    tally, started = Tally(), time.perf_counter()
    with _batches(input_path, chunk_size) as (schema, batches, malformed):
        check_input_columns(schema.names)
        out_schema = output_schema(schema, file_format(output_path, "output") == "csv")
        bad_schema = rejects_schema(schema)
        with (
            threadpool_limits(limits=1, user_api="blas"),
            _writer(output_path, out_schema) as write_out,
            _writer(rejects_path, bad_schema) as write_bad,
        ):
            for batch in batches:
                tally.rows_read += batch.num_rows
                scored, rejected, classes = score_batch(batch, predict, out_schema, bad_schema)
                write_out(scored)
                write_bad(rejected)
                write_bad(_malformed_rows(malformed, bad_schema, tally))
                tally.rows_scored += scored.num_rows
                tally.rows_rejected += rejected.num_rows
                tally.classes.update(classes)
            write_bad(_malformed_rows(malformed, bad_schema, tally))
    tally.seconds = time.perf_counter() - started
    return tally


def score_batch(batch: pa.RecordBatch, predict: Predict, out_schema: pa.Schema, bad_schema: pa.Schema):
    """One chunk: (scored rows, rejected rows with their reasons, the count of each predicted class)."""
    features, reasons = check_batch(batch)
    good = batch
    if reasons is None:
        rejected = bad_schema.empty_table()
    else:
        bad = reasons.is_valid().to_numpy(zero_copy_only=False)
        where = pa.array(np.flatnonzero(bad))
        rejected = pa.Table.from_arrays([reasons.take(where), *batch.take(where).columns], schema=bad_schema)
        good = batch.filter(pa.array(~bad))
        features = {name: values[~bad] for name, values in features.items()}
    if good.num_rows == 0:
        return out_schema.empty_table(), rejected, {}
    result = predict(pd.DataFrame(features, columns=list(FEATURES)))
    outputs, classes = output_arrays(result, pa.types.is_string(out_schema.field("confidence_scores").type))
    columns = [pa.array(features[name]) if name in FEATURES else good.column(name) for name in good.schema.names]
    return pa.Table.from_arrays([*columns, *outputs], schema=out_schema), rejected, classes


def _malformed_rows(malformed: list[str], schema: pa.Schema, tally: Tally) -> pa.Table:
    """Lines Arrow could not split into the header's fields, as rejects with nulls for their values."""
    reasons, malformed[:] = list(malformed), []
    tally.rows_read += len(reasons)
    tally.rows_rejected += len(reasons)
    nulls = [pa.nulls(len(reasons), f.type) for f in list(schema)[1:]]
    return pa.Table.from_arrays([pa.array(reasons, pa.string()), *nulls], schema=schema)


@contextlib.contextmanager
def _batches(path: str, chunk_size: int):
    """(schema, iterator of record batches, list that collects malformed CSV lines as they are met)."""
    source = Path(path)
    if not source.is_file():
        raise StepError(f"input not found or not a file: {path}")
    malformed: list[str] = []
    try:
        if file_format(path) == "parquet":
            parquet = pq.ParquetFile(source)
            yield parquet.schema_arrow, _guarded(parquet.iter_batches(batch_size=chunk_size), path), malformed
            parquet.close()
        else:
            names = _csv_header(source)
            reader = _csv_reader(source, names, chunk_size, malformed)
            yield reader.schema, _guarded(_rechunked(reader, chunk_size), path), malformed
            reader.close()
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


def _csv_reader(path: Path, names: list[str], chunk_size: int, malformed: list[str]):
    def skip_malformed(row) -> str:
        malformed.append(malformed_reason(row.actual_columns, row.expected_columns, row.text))
        return "skip"

    return pacsv.open_csv(
        path,
        # One thread keeps the malformed lines in step with the batches they were cut from.
        read_options=pacsv.ReadOptions(use_threads=False, block_size=min(max(chunk_size * 64, 1 << 16), 1 << 28)),
        parse_options=pacsv.ParseOptions(invalid_row_handler=skip_malformed),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=True, null_values=[""]
        ),
    )


def _rechunked(reader, chunk_size: int) -> Iterator[pa.RecordBatch]:
    """Arrow cuts CSV blocks by bytes; the model gets at most chunk_size rows at a time."""
    for batch in reader:
        for start in range(0, batch.num_rows, chunk_size):
            yield batch.slice(start, chunk_size)


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
    try:
        yield lambda table: table.num_rows and writer.write_table(table)
        writer.close()
        os.replace(partial, target)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
