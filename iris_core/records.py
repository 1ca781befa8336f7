"""The prediction-record format: one JSON object per scored row, written by the proxy and read by the monitor.

A line::

    {"ts": "2026-01-31T12:00:00.123Z", "request_id": "4f1c...", "model_name": "iris",
     "model_version": "2", "features": {"sepal_length": 5.1, "sepal_width": 3.5,
     "petal_length": 1.4, "petal_width": 0.2}, "prediction": "setosa",
     "confidence": 0.97, "latency_ms": 3.2}

``latency_ms`` is the latency of the whole request the row came in. The proxy's writer
(thread, queue and file rotation: ``serving.prediction_log``) encodes with ``encode``;
the ``monitor`` step reads a file back with ``read_log``, which skips and counts lines
that are not records instead of failing on them.
"""

import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from iris_core.schema import FEATURES

FIELDS = ("ts", "request_id", "model_name", "model_version", "features", "prediction", "confidence", "latency_ms")

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
    model_name: str,
    model_version: str | None,
    features: Mapping[str, float] | Sequence[float],
    prediction: str,
    confidence: float,
    latency_ms: float,
) -> dict:
    """One log record; ``features`` is a dict or the values in ``FEATURES`` order."""
    values = [features[name] for name in FEATURES] if isinstance(features, dict) else features
    return {
        "ts": ts,
        "request_id": request_id,
        "model_name": model_name,
        "model_version": None if model_version is None else str(model_version),
        "features": {name: float(value) for name, value in zip(FEATURES, values, strict=True)},
        "prediction": str(prediction),
        "confidence": float(confidence),
        "latency_ms": round(float(latency_ms), 3),
    }


def encode(record: dict) -> bytes:
    """One line, newline included; a non-finite number is a ValueError, never a line no reader accepts."""
    return (_encoder.encode(record) + "\n").encode()


class InvalidRecord(ValueError):
    """A log line that is not a prediction record; readers skip it and count it."""


def parse_line(line: str | bytes) -> dict:
    """The record on one line, checked field by field, or ``InvalidRecord`` naming what is wrong."""
    try:
        record = json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidRecord("not JSON") from None
    if not isinstance(record, dict):
        raise InvalidRecord("not a JSON object")
    features = record.get("features")
    if not isinstance(features, dict):
        raise InvalidRecord("no 'features' object")
    for name in FEATURES:
        if not _finite_number(features.get(name)):
            raise InvalidRecord(f"feature {name!r} missing or not a finite number")
    if not isinstance(record.get("prediction"), str):
        raise InvalidRecord("'prediction' missing or not a string")
    if not _finite_number(record.get("confidence")) or not 0 <= record["confidence"] <= 1:
        raise InvalidRecord("'confidence' missing or not between 0 and 1")
    for key in ("model_name", "model_version", "ts", "request_id"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise InvalidRecord(f"{key!r} is not a string")
    return record


def _reject_constant(name: str):
    """``NaN`` and ``Infinity`` are not JSON."""
    raise ValueError(name)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class LogContents:
    records: list[dict]
    skipped: int
    first_skipped: str | None = None  # "line N: reason", for the one warning a reader logs


def read_log(path: str | Path) -> LogContents:
    """All valid records of one log file, in file order; blank lines are ignored, bad ones counted."""
    records, skipped, first_skipped = [], 0, None
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(parse_line(line))
            except InvalidRecord as exc:
                skipped += 1
                first_skipped = first_skipped or f"line {number}: {exc}"
    return LogContents(records, skipped, first_skipped)
