"""Rows of an ``application/vnd.apache.parquet`` body (``DataFrame.to_parquet()``), as MLflow's scoring server reads it.

Imported only when such a request arrives, so the proxy does not load pyarrow until
someone sends Parquet. Only the feature columns are read, after their types are checked
in the file's schema, the row count and decoded size in its metadata, and every page
header of theirs against the row limit (``serving.protocols.parquet_pages``), so neither an extra
column nor a small file that declares or decompresses to gigabytes costs memory. Column types
follow MLflow's conversion to its ``double`` inputs: floats of any width, integers up to
32 bits, decimals and dictionary-encoded numbers; ``int64`` only when every value is 0
or 1 (MLflow refuses to convert any other). pandas' index columns, named in the file's
pandas metadata, are not columns, as ``pandas.read_parquet`` reads them.
"""

import pyarrow as pa
import pyarrow.parquet as pq

from serving.errors import shorten
from serving.protocols.parquet_pages import check_pages, leaf_columns
from serving.protocols.rows import IGNORED_COLUMN, Invocation, Limits, RowReader, ValidationError, check_count, finish

# What decoding the feature columns may take, from the sizes the metadata declares: a
# float64 is 8 bytes, so this leaves room for headers, statistics and dictionaries.
_BYTES_PER_VALUE = 32
_BYTES_PER_COLUMN_CHUNK = 4096


def parquet_rows(body: bytes, limits: Limits, reader: RowReader) -> Invocation:
    try:
        file = pq.ParquetFile(pa.BufferReader(body))
        schema, metadata = file.schema_arrow, file.metadata
    except (pa.ArrowException, OSError, ValueError):
        raise ValidationError(400, "MALFORMED_REQUEST", "the body is not a readable Parquet file") from None
    index_columns = set()
    pandas_metadata = _pandas_metadata(schema)
    for column in pandas_metadata.get("index_columns", []):
        if isinstance(column, str):
            index_columns.add(column)
    names = [name for name in schema.names if name not in index_columns]
    reader.positions(names, "the Parquet columns", repeats="refused")
    features = reader.names
    check_count(metadata.num_rows, limits)
    problems = [
        f"column {shorten(name, 40)}: {problem}"
        for name in features
        if (problem := _type_problem(schema.field(name).type))
    ]
    if problems:
        raise ValidationError(400, "INVALID_VALUE", f"invalid feature columns ({problems[0]})", problems)
    leaves = leaf_columns(metadata, features)
    _check_decoded_size(metadata, leaves)
    check_pages(body, metadata, features, leaves, limits)  # what the pages declare: pyarrow sizes its buffers from it
    try:
        table = file.read(columns=list(features), use_pandas_metadata=False)
    except (pa.ArrowException, OSError, ValueError):
        raise ValidationError(400, "MALFORMED_REQUEST", "the Parquet file cannot be read") from None
    if table.num_rows != metadata.num_rows:
        raise ValidationError(400, "MALFORMED_REQUEST", "the Parquet file holds another number of rows than it says")
    columns, problems = [], []
    for name in features:
        values, problem = _values(table.column(name))
        columns.append(values)
        if problem:
            problems.append(f"column {shorten(name, 40)}: {problem}")
    if problems:
        raise ValidationError(400, "INVALID_VALUE", f"invalid feature columns ({problems[0]})", problems)
    errors: list[str] = []
    rows = [reader.checked_row(list(values), number, errors) for number, values in enumerate(zip(*columns))]
    extra = len(names) > reader.width
    return Invocation(finish(rows, errors), frozenset({IGNORED_COLUMN}) if extra else frozenset())


def _pandas_metadata(schema: pa.Schema) -> dict:
    try:
        return schema.pandas_metadata or {}
    except (ValueError, TypeError):  # a b"pandas" entry that is not JSON: no pandas metadata then
        return {}


def _type_problem(arrow_type: pa.DataType) -> str | None:
    """Why MLflow cannot take a column of this type as a double input, or None when it can."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type) or pa.types.is_int64(arrow_type):
        return None
    if pa.types.is_integer(arrow_type):
        return None if arrow_type.bit_width <= 32 else "must be a number MLflow converts to double, got uint64"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "must be a number, got a string"
    if pa.types.is_boolean(arrow_type):
        return "must be a number, got a boolean"
    if pa.types.is_null(arrow_type):
        return "must be a number, got null"
    return f"must be a number, got {arrow_type}"


def _check_decoded_size(metadata: pq.FileMetaData, columns: list[int]) -> None:
    declared = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        declared += sum(row_group.column(index).total_uncompressed_size for index in columns)
    allowed = metadata.num_rows * len(columns) * _BYTES_PER_VALUE + metadata.num_row_groups * len(columns) * (
        _BYTES_PER_COLUMN_CHUNK
    )
    if declared > allowed:
        raise ValidationError(
            413, "REQUEST_TOO_LARGE", f"the Parquet file's feature columns decode to more than {allowed} bytes"
        )


def _values(column: pa.ChunkedArray) -> tuple[list, str | None]:
    """The column as Python numbers (None for nulls), or why its values cannot be converted."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_int64(column.type):
        values = column.to_pylist()
        if any(value not in (0, 1) for value in values if value is not None):
            return values, "int64 values other than 0 and 1 are not converted to double by MLflow; send float64"
        return values, None
    return column.cast(pa.float64()).to_pylist(), None
