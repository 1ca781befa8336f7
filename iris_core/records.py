"""The log-record formats: what the proxy writes about each scored row and each label, and the steps read back.

A prediction record, one per scored row::

    {"ts": "2026-01-31T12:00:00.123Z", "request_id": "4f1c...", "row": 0, "model_name": "wine",
     "model_version": "2", "features": {"alcohol": 13.2, "malic_acid": 1.78, ...},
     "prediction": "0", "confidence": 0.97, "latency_ms": 3.2}

``features`` holds the row's values under the names of the version's table contract
(``iris_core.table``), whatever the model; ``prediction`` is the class the model gave, as
text, and ``confidence`` its probability, or null for a model that gives none (one logged
without this project's outputs). ``row`` is the row's index in its request (logs written
before it existed leave it out: their rows of one request follow each other in order);
``latency_ms`` is the latency of the whole request the row came in.

A feedback record, one per label a client sent back for a scored row (``POST /feedback``)::

    {"ts": "2026-02-03T08:00:00.000Z", "request_id": "4f1c...", "row": 0, "label": "setosa"}

``request_id`` and ``row`` name the prediction record the label belongs to; ``label`` is
the true class, as text (the steps check it against the classes of the version that
answered). The proxy's writers (thread, queue and file rotation:
``serving.files.log_writer``) encode with ``encode``; the steps read files back with
``read_log`` and ``read_feedback_log``, which skip and count lines that are not records
instead of failing on them. A log rotates to ``PATH.1`` ... ``PATH.N``
(``rotated_files`` lists them), so a label that arrives days late may belong to a
prediction in an older file. Several proxies (replicas) each write their own files; a step
given a directory reads every log of the kind beneath it (``current_logs``, ``all_logs``),
by the file names ``PREDICTION_LOG_NAME`` and ``FEEDBACK_LOG_NAME``.
"""

import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

FIELDS = (
    "ts",
    "request_id",
    "row",
    "model_name",
    "model_version",
    "features",
    "prediction",
    "confidence",
    "latency_ms",
)
FEEDBACK_FIELDS = ("ts", "request_id", "row", "label")
PREDICTION_LOG_NAME = "predictions.jsonl"  # what a step looks for in a directory of logs
FEEDBACK_LOG_NAME = "feedback.jsonl"

# What a request id may look like: the proxy takes a client's X-Request-Id only if it
# matches, and a label must name one that does.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_RULE = "1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
MAX_LABEL = 255  # characters of a label, as of a class name in a contract

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def timestamp(epoch_seconds: float) -> str:
    """ISO-8601 in UTC with a ``Z``, to the millisecond: sortable as text and readable by pandas."""
    seconds = int(epoch_seconds)
    return f"{_second(seconds)}.{int((epoch_seconds - seconds) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """The formatting is most of a timestamp's cost, and a second holds many requests."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def make_record(
    *,
    ts: str,
    request_id: str,
    row: int = 0,
    model_name: str,
    model_version: str | None,
    features: Mapping[str, float] | Sequence[float],
    prediction: str,
    confidence: float | None,
    latency_ms: float,
    names: Sequence[str] | None = None,
) -> dict:
    """One prediction record; ``features`` is a dict, or the values in the order of ``names`` (the contract's)."""
    if not isinstance(features, Mapping):
        features = dict(zip(names, features, strict=True))
    return {
        "ts": ts,
        "request_id": request_id,
        "row": int(row),
        "model_name": model_name,
        "model_version": None if model_version is None else str(model_version),
        "features": {str(name): float(value) for name, value in features.items()},
        "prediction": str(prediction),
        "confidence": None if confidence is None else float(confidence),
        "latency_ms": round(float(latency_ms), 3),
    }


def encode(record: dict) -> bytes:
    """One line, newline included; a non-finite number is a ValueError, never a line no reader accepts."""
    return (_encoder.encode(record) + "\n").encode()


def make_feedback_record(*, ts: str, request_id: str, row: int, label: str) -> dict:
    """One feedback record: the true class ``label`` of row ``row`` of request ``request_id``."""
    return {"ts": ts, "request_id": request_id, "row": int(row), "label": str(label)}


class InvalidRecord(ValueError):
    """A log line that is not a record of its log's kind; readers skip it and count it."""


def parse_line(line: str | bytes) -> dict:
    """The prediction record on one line, checked field by field, or ``InvalidRecord`` naming what is wrong."""
    record = _json_object(line)
    features = record.get("features")
    if not isinstance(features, dict) or not features:
        raise InvalidRecord("no 'features' object")
    for name, value in features.items():
        if not _finite_number(value):
            raise InvalidRecord(f"feature {name[:40]!r} is not a finite number")
    if not isinstance(record.get("prediction"), str):
        raise InvalidRecord("'prediction' missing or not a string")
    confidence = record.get("confidence")
    if confidence is not None and (not _finite_number(confidence) or not 0 <= confidence <= 1):
        raise InvalidRecord("'confidence' is not between 0 and 1")
    for key in ("model_name", "model_version", "ts", "request_id"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise InvalidRecord(f"{key!r} is not a string")
    if "row" in record and not _row_index(record["row"]):
        raise InvalidRecord("'row' is not a row index")
    return record


def parse_feedback_line(line: str | bytes) -> dict:
    """The feedback record on one line, or ``InvalidRecord``: a label must name a request, a row and a class."""
    record = _json_object(line)
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise InvalidRecord("'request_id' missing or not a request id")
    if not _row_index(record.get("row")):
        raise InvalidRecord("'row' missing or not a row index")
    label = record.get("label")
    if not isinstance(label, str) or not label or len(label) > MAX_LABEL:
        raise InvalidRecord("'label' missing or not a class name")
    if record.get("ts") is not None and not isinstance(record["ts"], str):
        raise InvalidRecord("'ts' is not a string")
    return record


def _json_object(line: str | bytes) -> dict:
    try:
        record = json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidRecord("not JSON") from None
    if not isinstance(record, dict):
        raise InvalidRecord("not a JSON object")
    return record


def _reject_constant(name: str):
    """``NaN`` and ``Infinity`` are not JSON."""
    raise ValueError(name)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _row_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class LogContents:
    records: list[dict]
    skipped: int
    first_skipped: str | None = None  # "line N: reason", for the one warning a reader logs


def iter_lines(path: str | Path, parse: Callable[[bytes], dict]) -> Iterator[dict | InvalidRecord]:
    """Each non-blank line of one file, in order: its record, or the ``InvalidRecord`` saying why it is none.

    The error's ``args`` are ``("line N: reason",)``. One line at a time, so a reader that
    keeps only some records never holds a whole log in memory.
    """
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield parse(line)
            except InvalidRecord as exc:
                yield InvalidRecord(f"line {number}: {exc}")


def read_log(path: str | Path, parse: Callable[[bytes], dict] = parse_line) -> LogContents:
    """All valid records of one log file, in file order; blank lines are ignored, bad ones counted."""
    records, skipped, first_skipped = [], 0, None
    for item in iter_lines(path, parse):
        if isinstance(item, InvalidRecord):
            skipped += 1
            first_skipped = first_skipped or str(item)
        else:
            records.append(item)
    return LogContents(records, skipped, first_skipped)


def read_feedback_log(path: str | Path) -> LogContents:
    return read_log(path, parse_feedback_line)


def rotated_files(path: str | Path) -> list[Path]:
    """A log and the older files its rotation kept (``PATH.1`` is the newest of those), oldest first."""
    path = Path(path)
    older = []
    index = 1
    while (candidate := path.with_name(f"{path.name}.{index}")).is_file():
        older.append(candidate)
        index += 1
    return [*reversed(older), *([path] if path.is_file() else [])]


def current_logs(path: str | Path, name: str) -> list[Path]:
    """The log a path names, or every file called ``name`` beneath a directory (one per proxy), sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(found for found in path.rglob(name) if found.is_file())
    return [path]


def all_logs(path: str | Path, name: str) -> list[Path]:
    """``current_logs`` with the rotated files of each, each log's oldest first."""
    return [file for log in current_logs(path, name) for file in rotated_files(log)]
