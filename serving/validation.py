"""Turn a request body into feature rows, or into the one client error that explains why not.

Pure functions, no I/O: the proxy calls them before anything reaches the upstream, so the
bare scoring server never sees a missing Content-Type, a NaN, a string where a number
belongs or a body deep enough to crash its JSON parser. Errors never echo the body; they
name the row and column, and long client-supplied names are cut short.
"""

import csv
import io
from dataclasses import dataclass

import orjson

from iris_core.schema import FEATURES, MAX_VALUE, NOT_A_NUMBER_TEXT, NUMBER, number_problem
from serving.errors import MAX_DETAILS, HttpError, shorten

PROTOCOL_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
_FEATURE_SET = frozenset(FEATURES)


@dataclass(frozen=True)
class Limits:
    max_rows: int = 10_000


class ValidationError(HttpError):
    """A client error: the request is refused before anything reaches the model server."""


def media_type(content_type: str | None) -> str:
    """The JSON or CSV media type of a Content-Type header; anything else is a 415."""
    if not content_type:
        raise _unsupported("no Content-Type header")
    mime, *params = content_type.split(";")
    mime = mime.strip().lower()
    if mime not in (JSON_TYPE, CSV_TYPE):
        raise _unsupported(f"Content-Type {shorten(mime, 60)!r} is not supported")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise _unsupported("only the utf-8 charset is supported")
    return mime


def invocation_rows(content_type: str | None, body: bytes, limits: Limits) -> list[list[float]]:
    """Rows in FEATURES order from an MLflow scoring-protocol request (JSON or CSV)."""
    if media_type(content_type) == CSV_TYPE:
        return csv_rows(body, limits)
    document = _load_json(body)
    if not isinstance(document, dict):
        raise _format("the body must be a JSON object with one of " + ", ".join(PROTOCOL_KEYS))
    keys = [key for key in PROTOCOL_KEYS if key in document]
    unknown = [key for key in document if key not in PROTOCOL_KEYS and key != "params"]
    if len(keys) != 1 or unknown:
        found = ", ".join(shorten(k, 40) for k in [*keys, *unknown][:6]) or "none"
        raise _format(f"the body must have exactly one of {', '.join(PROTOCOL_KEYS)} (found: {found})")
    if document.get("params"):
        raise _format("this model takes no params")
    key = keys[0]
    payload = document[key]
    if key == "dataframe_split":
        return split_rows(payload, limits)
    if key == "inputs":
        return column_rows(payload, limits)
    return record_rows(payload, limits, key)


def predict_row(content_type: str | None, body: bytes) -> list[float]:
    """The one row of a classic ``/predict`` request: a JSON object holding the four features."""
    if media_type(content_type) != JSON_TYPE:
        raise _unsupported("/predict takes application/json")
    document = _load_json(body)
    if not isinstance(document, dict):
        raise _format("the body must be a JSON object with the fields " + ", ".join(FEATURES))
    _check_columns(document.keys())
    errors: list[str] = []
    return _finish([_checked_row([document[name] for name in FEATURES], FEATURES, None, errors)], errors)[0]


def split_rows(payload, limits: Limits) -> list[list[float]]:
    if (
        not isinstance(payload, dict)
        or not {"columns", "data"} <= payload.keys()
        or not payload.keys() <= {"columns", "data", "index"}
    ):
        raise _format('dataframe_split must be an object with "columns" and "data" (and optionally "index")')
    columns, data = payload["columns"], payload["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _format("dataframe_split.columns must be a list of column names")
    if not isinstance(data, list):
        raise _format("dataframe_split.data must be a list of rows")
    _check_columns(columns)
    _check_count(len(data), limits)
    order = _reorder(columns)
    rows, errors = [], []
    for index, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise _format(f"row {index} must be a list of {len(columns)} values")
        rows.append(_checked_row([row[i] for i in order], FEATURES, index, errors))
    return _finish(rows, errors)


def record_rows(payload, limits: Limits, key: str = "dataframe_records") -> list[list[float]]:
    if not isinstance(payload, list):
        raise _format(f"{key} must be a list of objects")
    _check_count(len(payload), limits)
    rows, errors = [], []
    for index, record in enumerate(payload):
        if not isinstance(record, dict):
            raise _format(f"{key}[{index}] must be an object")
        if record.keys() != _FEATURE_SET:
            _check_columns(record.keys(), f"{key}[{index}]")
        rows.append(_checked_row([record[name] for name in FEATURES], FEATURES, index, errors))
    return _finish(rows, errors)


def column_rows(payload, limits: Limits) -> list[list[float]]:
    if not isinstance(payload, dict):
        raise _format("inputs must be an object mapping each column to a list of values")
    _check_columns(payload.keys())
    columns = [payload[name] for name in FEATURES]
    if not all(isinstance(values, list) for values in columns):
        raise _format("each column of inputs must be a list of values")
    lengths = {len(values) for values in columns}
    if len(lengths) != 1:
        raise _format("the columns of inputs must all have the same length")
    _check_count(lengths.pop(), limits)
    errors: list[str] = []
    rows = [_checked_row(list(values), FEATURES, index, errors) for index, values in enumerate(zip(*columns))]
    return _finish(rows, errors)


def csv_rows(body: bytes, limits: Limits) -> list[list[float]]:
    """Rows of a CSV body with a header row naming the four features in any order."""
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
    header = [name.strip() for name in lines[0]]
    _check_columns(header, "the CSV header")
    _check_count(len(lines) - 1, limits)
    order = _reorder(header)
    rows, errors = [], []
    for index, line in enumerate(lines[1:]):
        if len(line) != len(header):
            raise _format(f"CSV row {index} has {len(line)} fields, the header has {len(header)}")
        rows.append(_checked_row([_csv_number(line[i]) for i in order], FEATURES, index, errors))
    return _finish(rows, errors)


def _csv_number(text: str):
    return float(text) if NUMBER.fullmatch(text) else text


def _checked_row(values: list, names, index: int | None, errors: list[str]) -> list[float]:
    """The row as floats; each bad value adds an error naming its row and column."""
    row = []
    for name, value in zip(names, values):
        kind = type(value)
        if (kind is float or kind is int) and 0 < value <= MAX_VALUE:
            row.append(float(value))
            continue
        if len(errors) < MAX_DETAILS:
            where = name if index is None else f"row {index}, column {name}"
            errors.append(f"{where}: {_value_problem(value)}")
        row.append(0.0)
    return row


def _value_problem(value) -> str:
    if type(value) in (int, float):
        return number_problem(value, digits=6)
    if isinstance(value, str):
        return NOT_A_NUMBER_TEXT
    names = {bool: "a boolean", type(None): "null", list: "an array", dict: "an object"}
    return f"must be a number, got {names.get(type(value), type(value).__name__)}"


def _finish(rows: list[list[float]], errors: list[str]) -> list[list[float]]:
    if errors:
        raise ValidationError(400, "INVALID_VALUE", f"invalid feature values ({errors[0]})", errors)
    return rows


def _check_columns(columns, where: str = "the input") -> None:
    """Exactly the four features, each once; the error names what is missing and what is extra."""
    names = list(columns)
    if len(names) == len(FEATURES) and set(names) == _FEATURE_SET:
        return
    missing = [name for name in FEATURES if name not in names]
    extra = [name for name in dict.fromkeys(names) if name not in _FEATURE_SET]
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    details = [f"missing column: {name}" for name in missing]
    details += [f"unexpected column: {shorten(str(name), 40)}" for name in extra]
    details += [f"repeated column: {name}" for name in repeated if name in _FEATURE_SET]
    raise ValidationError(
        400, "INVALID_COLUMNS", f"{where} must have exactly the columns {', '.join(FEATURES)}", details
    )


def _check_count(count: int, limits: Limits) -> None:
    if count == 0:
        raise _format("there are no rows to score")
    if count > limits.max_rows:
        raise ValidationError(413, "TOO_MANY_ROWS", f"{count} rows is more than the limit of {limits.max_rows}")


def _reorder(columns: list[str]) -> list[int]:
    return [columns.index(name) for name in FEATURES]


def _load_json(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ValidationError(400, "MALFORMED_REQUEST", "the body is not valid JSON", [detail]) from None


def _format(message: str) -> ValidationError:
    return ValidationError(400, "INVALID_FORMAT", message)


def _unsupported(message: str) -> ValidationError:
    return ValidationError(415, "UNSUPPORTED_MEDIA_TYPE", f"{message}; send {JSON_TYPE} or {CSV_TYPE}")
