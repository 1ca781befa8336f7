"""Engine ``pandas``: stream a CSV or Parquet file through the model one chunk at a time.

Arrow reads the input in record batches (``pyarrow.csv.open_csv`` for CSV, so a line with
the wrong number of fields becomes a reject instead of a parse error, and
``ParquetFile.iter_batches`` for Parquet) and writes each scored chunk at once, so memory
holds one chunk however large the file. Outputs are written next to their final path and
renamed into place only when the whole file is done.
"""

import contextlib
import csv
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from iris_core.schema import CLASSES, FEATURES
from steps.batch_rows import (
    REASON,
    Tally,
    check_chunk,
    check_input_columns,
    file_format,
    malformed_reason,
)
from steps.errors import StepError

_logger = logging.getLogger(__name__)

Predict = Callable[[pd.DataFrame], pd.DataFrame]


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


def scores_struct() -> pa.DataType:
    return pa.struct([(name, pa.float64()) for name in CLASSES])


def rejects_schema(input_schema: pa.Schema) -> pa.Schema:
    return pa.schema([(REASON, pa.string()), *input_schema])


def score_file(input_path: str, output_path: str, rejects_path: str, predict: Predict, chunk_size: int) -> Tally:
    """Score every valid row of the input into the output; invalid rows go to the rejects file."""
    tally, started = Tally(), time.perf_counter()
    with _batches(input_path, chunk_size) as (schema, batches, malformed):
        check_input_columns(schema.names)
        out_schema = output_schema(schema, file_format(output_path, "output") == "csv")
        bad_schema = rejects_schema(schema)
        with _writer(output_path, out_schema) as write_out, _writer(rejects_path, bad_schema) as write_bad:
            for batch in batches:
                tally.rows_read += batch.num_rows
                scored, rejected = score_batch(batch, predict, out_schema, bad_schema)
                write_out(scored)
                write_bad(rejected)
                write_bad(_malformed_rows(malformed, bad_schema, tally))
                tally.rows_scored += scored.num_rows
                tally.rows_rejected += rejected.num_rows
                tally.classes.update(scored.column("prediction").to_pylist())
            write_bad(_malformed_rows(malformed, bad_schema, tally))
    tally.seconds = time.perf_counter() - started
    return tally


def score_batch(
    batch: pa.RecordBatch, predict: Predict, out_schema: pa.Schema, bad_schema: pa.Schema
) -> tuple[pa.Table, pa.Table]:
    """One chunk: (scored rows, rejected rows with their reasons)."""
    features, reasons = check_chunk(batch.select(list(FEATURES)).to_pandas())
    bad = reasons.notna().to_numpy()
    rejected = batch.filter(pa.array(bad))
    rejected_table = pa.Table.from_arrays(
        [pa.array(reasons[bad].tolist(), pa.string()), *rejected.columns], schema=bad_schema
    )
    good = batch.filter(pa.array(~bad))
    if good.num_rows == 0:
        return out_schema.empty_table(), rejected_table
    good_features = features[~bad].reset_index(drop=True)
    result = predict(good_features)
    columns = [
        pa.array(good_features[name].to_numpy(), pa.float64()) if name in FEATURES else good.column(name)
        for name in good.schema.names
    ]
    columns += output_arrays(result, out_schema.field("confidence_scores").type)
    return pa.Table.from_arrays(columns, schema=out_schema), rejected_table


def output_arrays(result: pd.DataFrame, scores_type: pa.DataType) -> list[pa.Array]:
    scores = result["confidence_scores"].tolist()
    if pa.types.is_string(scores_type):
        scores_array = pa.array([orjson.dumps(s).decode() for s in scores], pa.string())
    else:
        scores_array = pa.array(scores, scores_type)
    return [
        pa.array(result["prediction"].astype(object).tolist(), pa.string()),
        pa.array(result["prediction_index"].to_numpy(), pa.int64()),
        pa.array(result["confidence"].to_numpy(), pa.float64()),
        scores_array,
    ]


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
