"""Turn a request body into feature rows, or into the one client error that explains why not.

Pure functions, no I/O: the proxy calls them before anything reaches the upstream, so the
bare scoring server never sees a missing Content-Type, a NaN, a string where a number
belongs or a body deep enough to crash its JSON parser. Errors never echo the body; they
name the row and column, and long client-supplied names are cut short. Every check costs
time linear in the body, whatever its shape (``tests/unit/serving/protocols/test_validation_cost.py`` measures
the largest ones the limits allow): one request must not hold the event loop.

``/invocations`` reads MLflow's scoring protocol as MLflow 3.17's scoring server reads it
for a model of named columns (``tests/integration/serving/test_mlflow_compat.py`` sends the same requests to both):
the same content types and Content-Type parameters, the same JSON shapes with pandas'
rules for them, a UTF-8 byte order mark (or UTF-16/32, as Python's ``json`` detects them),
and what the model does not use ignored: ``params`` (the model declares none), top-level
keys beside the protocol key, and columns that are not features (pandas' index column
included). What is ignored is never forwarded; ``Invocation.ignored`` names it so that it
can be counted. The proxy's own rules are stricter than MLflow's on purpose: a feature
value must be a JSON number of the feature's type (no strings or booleans coerced), finite,
and within the hard rules of the version's table contract (``serving.protocols.rows``, which every
body format shares).
"""

import csv
import io
import json

import orjson

from iris_core.table.rules import NUMBER
from serving.errors import shorten
from serving.protocols.rows import (
    IGNORED_COLUMN,
    IGNORED_FIELD,
    IGNORED_PARAMS,
    Invocation,
    Limits,
    RowReader,
    ValidationError,
    check_count,
    finish,
    format_error,
)

__all__ = [
    "IGNORED_COLUMN",
    "IGNORED_FIELD",
    "IGNORED_PARAMS",
    "Invocation",
    "Limits",
    "ValidationError",
    "parse_invocation",
    "predict_row",
]

PROTOCOL_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# A top-level key of these makes MLflow read the whole object as columns ("unified LLM
# input") and answer the bare list of predictions, without the "predictions" key.
LLM_KEYS = ("messages", "prompt", "input")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
PARQUET_TYPE = "application/vnd.apache.parquet"
CONTENT_TYPES = (JSON_TYPE, CSV_TYPE, PARQUET_TYPE)
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_format = format_error


# -- content types ------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, checked as MLflow's scoring server checks it; else a 415.

    The type is case-sensitive, ``charset`` must be ``utf-8`` (any case, unquoted), and any
    other parameter is refused, as MLflow refuses it.
    """
    if content_type in CONTENT_TYPES:  # no parameters: nearly every request
        return content_type
    if not content_type:
        raise _unsupported("no Content-Type header")
    mime, *pairs = (part.strip() for part in content_type.split(";"))
    parameters = {key: value for key, _, value in (pair.partition("=") for pair in pairs)}
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise _unsupported("only the utf-8 charset is supported")
    if parameters.keys() - {"charset"}:
        unknown = ", ".join(shorten(key, 40) for key in list(parameters.keys() - {"charset"})[:3])
        raise _unsupported(f"unknown Content-Type parameter ({unknown})")
    if mime not in CONTENT_TYPES:
        raise _unsupported(f"Content-Type {shorten(mime, 60)!r} is not supported")
    return mime


# -- /invocations -------------------------------------------------------------------------


def parse_invocation(content_type: str | None, body: bytes, limits: Limits, reader: RowReader) -> Invocation:
    """The rows of an MLflow scoring-protocol request (JSON, CSV or Parquet), checked by ``reader``."""
    mime = media_type(content_type)
    if mime == CSV_TYPE:
        return csv_rows(body, limits, reader)
    if mime == PARQUET_TYPE:
        from serving.protocols.parquet_body import parquet_rows

        return parquet_rows(body, limits, reader)
    document = load_json(body)
    if not isinstance(document, dict):
        raise _format("the body must be a JSON object with one of " + ", ".join(PROTOCOL_KEYS))
    if not document.keys().isdisjoint(LLM_KEYS):
        rows, extra = column_rows(document, limits, reader, "the body", llm_format=True)
        return Invocation(rows, frozenset({IGNORED_COLUMN}) if extra else frozenset(), unwrapped=True)
    keys = [key for key in PROTOCOL_KEYS if key in document]
    if len(keys) != 1:
        found = ", ".join(shorten(str(k), 40) for k in list(document)[:6]) or "none"
        raise _format(f"the body must have exactly one of {', '.join(PROTOCOL_KEYS)} (found: {found})")
    key = keys[0]
    payload = document[key]
    if key == "dataframe_split":
        rows, extra = split_rows(payload, limits, reader)
    elif key == "dataframe_records":
        rows, extra = record_rows(payload, limits, reader, key)
    elif isinstance(payload, dict):
        rows, extra = column_rows(payload, limits, reader, key)
    elif key == "instances":
        rows, extra = instance_rows(payload, limits, reader)
    else:
        rows, extra = record_rows(payload, limits, reader, key)
    ignored = set()
    if document.get("params") not in (None, {}):
        ignored.add(IGNORED_PARAMS)
    if len(document) > 1 + ("params" in document):
        ignored.add(IGNORED_FIELD)
    if extra:
        ignored.add(IGNORED_COLUMN)
    return Invocation(rows, frozenset(ignored))


def split_rows(payload, limits: Limits, reader: RowReader) -> tuple[list[list], bool]:
    """pandas' "split" orient: ``data`` rows (lists, or objects) under optional ``columns`` and ``index``."""
    if not isinstance(payload, dict) or "data" not in payload or not payload.keys() <= _SPLIT_KEYS:
        raise _format('dataframe_split must be an object with "data" and optionally "columns" and "index"')
    data, columns, index = payload["data"], payload.get("columns"), payload.get("index")
    if not isinstance(data, list):
        raise _format("dataframe_split.data must be a list of rows")
    if columns is not None and not isinstance(columns, list):
        raise _format("dataframe_split.columns must be a list of column names")
    if (
        columns == reader.name_list
        and index is None
        and data
        and type(data[0]) is list
        and len(data) <= limits.max_rows
    ):
        return reader.listed_rows(data), False  # lists of the features in order, as most clients send them
    if columns is not None and any(isinstance(name, (list, dict)) for name in columns):
        raise _format("dataframe_split.columns must hold column names, not lists or objects")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise _format("dataframe_split.index must be a list with one entry per row")
    check_count(len(data), limits)
    if data and all(isinstance(row, dict) for row in data):  # pandas takes each object as a record
        if columns is None:
            return record_rows(data, limits, reader, "dataframe_split.data")
        named = {name for name in columns if type(name) is str}
        wanted = [name for name in reader.names if name in named]  # the rest of the columns are ignored
        chosen = [{name: record[name] for name in wanted if name in record} for record in data]
        rows, _ = record_rows(chosen, limits, reader, "dataframe_split.data")
        return rows, len(columns) > reader.width or any(len(r) > reader.width for r in data)
    if columns is None:
        raise reader.columns_error(reader.missing(()), "dataframe_split")
    order, extra = reader.positions(columns, "dataframe_split.columns", repeats="refused")
    rows, errors = [], []
    for number, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise _format(f"row {number} must be a list of {len(columns)} values")
        rows.append(reader.checked_row([row[i] for i in order], number, errors))
    return finish(rows, errors), extra


def record_rows(payload, limits: Limits, reader: RowReader, key: str = "dataframe_records") -> tuple[list[list], bool]:
    """A list of objects, one per row; keys that are not features are ignored."""
    if not isinstance(payload, list):
        raise _format(f"{key} must be a list of objects")
    check_count(len(payload), limits)
    rows, errors, extra = [], [], False
    names, width = reader.names, reader.width
    for number, record in enumerate(payload):
        if not isinstance(record, dict):
            raise _format(f"{key}[{number}] must be an object")
        try:
            values = [record[name] for name in names]
        except KeyError:
            raise reader.columns_error(reader.missing(record), f"{key}[{number}]") from None
        extra = extra or len(record) > width
        rows.append(reader.checked_row(values, number, errors))
    return finish(rows, errors), extra


def instance_rows(payload, limits: Limits, reader: RowReader) -> tuple[list[list], bool]:
    """TF-serving ``instances`` as a list of objects: MLflow turns them into columns, so every object has the same keys."""
    if payload == []:
        check_count(0, limits)
    if not isinstance(payload, list) or not isinstance(payload[0], dict):
        raise _format("instances must be a list of objects or an object of columns")
    keys = payload[0].keys()
    for number, record in enumerate(payload):
        if not isinstance(record, dict):
            raise _format(f"instances[{number}] must be an object")
        if record.keys() != keys:
            raise _format("every object of instances must have the same keys")
    rows, extra = record_rows(payload, limits, reader, "instances")
    for name in keys - reader.name_set:
        _check_array([record[name] for record in payload], f"instances column {shorten(str(name), 40)}")
    return rows, extra


def column_rows(
    payload: dict, limits: Limits, reader: RowReader, key: str, llm_format: bool = False
) -> tuple[list[list], bool]:
    """An object of columns (``inputs``, ``instances``), as pandas builds a frame from it.

    A column is a list of values, one per row, or a single value repeated on every row;
    the lists, extra columns' included, must all have the same length (one row when there
    are none). MLflow casts ``inputs`` and ``instances`` columns to numpy arrays, so an
    extra column must be one numpy can make an array of; its LLM format (``llm_format``) does not, and reads the
    object as one row when every list in it holds only strings (each such list a value).
    """
    if not payload:
        raise _format(f"{key} has no columns")
    try:
        columns = [payload[name] for name in reader.names]
    except KeyError:
        raise reader.columns_error(reader.missing(payload), key) from None
    lengths = set()
    for name, values in payload.items():
        if isinstance(values, list):
            lengths.add(len(values))
            if not llm_format and name not in reader.name_set:
                _check_array(values, f"{key} column {shorten(str(name), 40)}")
    if llm_format and all(
        not isinstance(values, list) or all(isinstance(item, str) for item in values) for values in payload.values()
    ):
        lengths = set()  # one row; a list of strings is a cell, and a feature holding one is refused as a list
        columns = [[values] for values in columns]
    if len(lengths) > 1:
        raise _format(f"the columns of {key} must all have the same length")
    count = lengths.pop() if lengths else 1
    check_count(count, limits)
    columns = [values if isinstance(values, list) else [values] * count for values in columns]
    errors: list[str] = []
    rows = [reader.checked_row(list(values), number, errors) for number, values in enumerate(zip(*columns))]
    return finish(rows, errors), len(payload) > reader.width


def csv_rows(body: bytes, limits: Limits, reader: RowReader) -> Invocation:
    """Rows of a CSV body whose header row names the features, as ``pandas.read_csv`` reads it.

    Columns that are not features are ignored, pandas' unnamed index column included; a
    repeated name counts once (pandas renames the later ones); when the first data row has
    one field more than the header, pandas takes the first field of every row as the index.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(400, "MALFORMED_REQUEST", "the CSV body is not valid UTF-8") from None
    try:
        lines = [line for line in csv.reader(io.StringIO(text, newline="")) if line]
    except csv.Error as exc:
        raise ValidationError(400, "MALFORMED_REQUEST", "the CSV body cannot be parsed", [str(exc)]) from None
    if not lines:
        raise _format("the CSV body is empty; it needs a header row and at least one row")
    header, data = lines[0], lines[1:]
    order, extra = reader.positions(header, "the CSV header", repeats="first")
    check_count(len(data), limits)
    width = len(header)
    if len(data[0]) == width + 1:  # the implicit index column
        order, width, extra = [i + 1 for i in order], width + 1, True
    rows, errors = [], []
    for number, line in enumerate(data):
        fields = len(line)
        if fields > width:
            raise _format(f"CSV row {number} has {fields} fields, more than the {width} expected")
        # pandas reads missing fields as missing values (not padded here: a wide header makes that quadratic)
        rows.append(reader.checked_row([_csv_number(line[i]) if i < fields else None for i in order], number, errors))
    return Invocation(finish(rows, errors), frozenset({IGNORED_COLUMN}) if extra else frozenset())


# -- /predict -----------------------------------------------------------------------------


def predict_row(content_type: str | None, body: bytes, reader: RowReader) -> list:
    """The one row of a classic ``/predict`` request: a JSON object holding exactly the features."""
    if media_type(content_type) != JSON_TYPE:
        raise _unsupported("/predict takes application/json")
    document = load_json(body)
    if not isinstance(document, dict):
        raise _format("the body must be a JSON object with a field per feature")
    reader.exact_columns(document.keys())
    errors: list[str] = []
    return finish([reader.checked_row([document[name] for name in reader.names], None, errors)], errors)[0]


# -- the pieces ---------------------------------------------------------------------------


def load_json(body: bytes):
    """The JSON document; what orjson refuses gets a second reading by Python's ``json``, as MLflow reads it.

    That second reading accepts a byte order mark, UTF-16 and UTF-32, integers of any size
    and ``NaN``/``Infinity`` (which the value rules then refuse where they matter).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first = exc
    try:
        return json.loads(body)
    except RecursionError:
        raise ValidationError(400, "MALFORMED_REQUEST", "the body is not valid JSON", ["nested too deeply"]) from None
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        detail = f"{first.msg} at line {first.lineno} column {first.colno}"
        raise ValidationError(400, "MALFORMED_REQUEST", "the body is not valid JSON", [detail]) from None


def _check_array(values: list, where: str) -> None:
    """An ignored column must still be one numpy can hold (nested lists of one shape), as MLflow needs it."""
    shape = None
    for value in values:
        current = _shape(value, where)
        if shape is not None and current != shape:
            raise _format(f"{where} has nested lists of different lengths")
        shape = current


def _shape(value, where: str, depth: int = 0) -> tuple:
    if not isinstance(value, list):
        return ()
    if depth > 32:
        raise _format(f"{where} is nested too deeply")
    inner = {_shape(item, where, depth + 1) for item in value}
    if len(inner) > 1:
        raise _format(f"{where} has nested lists of different lengths")
    return (len(value), *inner.pop()) if inner else (0,)


def _csv_number(text: str | None):
    if text is None:
        return None
    return float(text) if NUMBER.fullmatch(text) else text


def _unsupported(message: str) -> ValidationError:
    return ValidationError(415, "UNSUPPORTED_MEDIA_TYPE", f"{message}; send {JSON_TYPE}, {CSV_TYPE} or {PARQUET_TYPE}")
