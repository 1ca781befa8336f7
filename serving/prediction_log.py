"""The prediction log: one JSON object per scored row, written off the request path.

The line format lives here and nowhere else: the proxy writes it through
``PredictionLogWriter`` and the ``monitor`` step reads it back with ``read_log``. A line::

    {"ts": "2026-01-31T12:00:00.123Z", "request_id": "4f1c...", "model_name": "iris",
     "model_version": "2", "features": {"sepal_length": 5.1, "sepal_width": 3.5,
     "petal_length": 1.4, "petal_width": 0.2}, "prediction": "setosa",
     "confidence": 0.97, "latency_ms": 3.2}

``latency_ms`` is the latency of the whole request the row came in. Logging never blocks
or fails a request: ``submit`` puts one item per request into a bounded queue and returns;
a background thread turns items into lines and appends them to the file, rotating it by
size (``path.1`` ... ``path.N``, like ``logging.handlers.RotatingFileHandler``). A full
queue or a failed write drops the rows and reports them through ``on_dropped``.
"""

import collections
import functools
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from steps.config import FEATURES

_logger = logging.getLogger(__name__)

FIELDS = ("ts", "request_id", "model_name", "model_version", "features", "prediction", "confidence", "latency_ms")

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5
DEFAULT_QUEUE_SIZE = 10_000
DROPPED_QUEUE_FULL = "queue_full"
DROPPED_WRITE_ERROR = "write_error"

_BATCH_ITEMS = 512
_POLL_INTERVAL_S = 0.05
_WARN_INTERVAL_S = 60.0


def timestamp(epoch_seconds: float) -> str:
    """ISO-8601 in UTC with a ``Z``, to the millisecond: sortable as text and readable by pandas."""
    seconds = int(epoch_seconds)
    return f"{_second(seconds)}.{int((epoch_seconds - seconds) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """The formatting is most of a timestamp's cost, and a second holds many requests."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def make_record(
    *, ts: str, request_id: str, model_name: str, model_version: str | None,
    features: Mapping[str, float] | Sequence[float], prediction: str, confidence: float, latency_ms: float,
) -> dict:
    """One log record; ``features`` is a dict or the values in ``steps.config.FEATURES`` order."""
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
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


class InvalidRecord(ValueError):
    """A log line that is not a prediction record; readers skip it and count it."""


def parse_line(line: str | bytes) -> dict:
    """The record on one line, checked field by field, or ``InvalidRecord`` naming what is wrong."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
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


class RotatingFile:
    """Appends bytes to ``path``; past ``max_bytes`` it shifts ``path`` to ``path.1`` and so on.

    At most ``backup_count`` old files are kept; ``max_bytes=0`` never rotates. A single
    line longer than ``max_bytes`` still goes into a file of its own.
    """

    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, backup_count: int = DEFAULT_BACKUP_COUNT):
        if max_bytes < 0 or backup_count < 1:
            raise ValueError("max_bytes must be >= 0 and backup_count >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._file = None
        self._size = 0

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Write the lines, rotating between two lines when the next would pass ``max_bytes``."""
        if self._file is None:
            self._file = open(self.path, "ab")
            self._size = self._file.tell()
        chunk = []
        for line in lines:
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._flush(chunk)
                chunk = []
                self._rotate()
            chunk.append(line)
            self._size += len(line)
        self._flush(chunk)

    def _flush(self, chunk: list[bytes]) -> None:
        if chunk:
            self._file.write(b"".join(chunk))
            self._file.flush()

    def _rotate(self) -> None:
        self.close()
        for index in range(self.backup_count - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "ab")
        self._size = 0

    def close(self) -> None:
        """Close the file; the next write opens it again (so a failed disk gets a fresh try)."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError:
                pass


def _ignore(*_args) -> None:
    pass


class PredictionLogWriter:
    """Logs the rows of sampled requests from a background thread; ``submit`` never blocks.

    Sampling is per request (``sample_rate`` of the requests are logged with all their
    rows), so the hot path pays one random number, not one per row. Requests wait in a
    deque, whose ``append`` needs no lock, for a thread that wakes every
    ``_POLL_INTERVAL_S`` while idle. ``on_written(n)`` and ``on_dropped(reason, n)``
    report rows, for the metrics; both may be called from the writer thread.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sample_rate: float = 1.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_written: Callable[[int], None] = _ignore,
        on_dropped: Callable[[str, int], None] = _ignore,
    ):
        if not 0 <= sample_rate <= 1:
            raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._file = RotatingFile(path, max_bytes, backup_count)
        self._pending: collections.deque = collections.deque()
        self._queue_size = queue_size
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning = -math.inf

    def start(self) -> "PredictionLogWriter":
        self._thread = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def submit(
        self, *, request_id: str, model_name: str, model_version: str | None,
        rows: Sequence, predictions: Sequence[Mapping], latency_ms: float,
    ) -> bool:
        """Queue one request; False if it is not logged. Nothing is copied or encoded here.

        ``rows`` are dicts or value sequences in FEATURES order; ``predictions`` are the
        model's records for them (``prediction`` and ``confidence`` are read from each).
        Call it from one thread (the proxy's event loop) so the bound holds exactly.
        """
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return False
        if len(self._pending) >= self._queue_size:
            self._on_dropped(DROPPED_QUEUE_FULL, len(rows))
            return False
        self._pending.append((time.time(), request_id, model_name, model_version, rows, predictions, latency_ms))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), then stop the thread and close the file."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                _logger.warning("Prediction log not flushed within %.1f s; %d requests not written", timeout, len(self._pending))
                return  # the thread still owns the file
            self._thread = None
        self._file.close()

    def _drain(self) -> None:
        pending = self._pending
        while True:
            stopping = self._stop.is_set()
            items = []
            while pending and len(items) < _BATCH_ITEMS:
                items.append(pending.popleft())
            if items:
                try:
                    self._write(items)
                except Exception:  # a bad item must not end the thread and with it all logging
                    _logger.exception("Prediction log writer failed on a batch; dropping it")
                    self._on_dropped(DROPPED_WRITE_ERROR, sum(len(item[4]) for item in items))
            elif stopping:
                return
            else:
                self._stop.wait(_POLL_INTERVAL_S)

    def _write(self, items: list[tuple]) -> None:
        lines = []
        for epoch, request_id, model_name, model_version, rows, predictions, latency_ms in items:
            ts = timestamp(epoch)
            for features, output in zip(rows, predictions):
                lines.append(encode(make_record(
                    ts=ts, request_id=request_id, model_name=model_name, model_version=model_version,
                    features=features, prediction=output["prediction"], confidence=output["confidence"],
                    latency_ms=latency_ms,
                )))
        if not lines:
            return
        try:
            self._file.write_lines(lines)
        except OSError as exc:
            self._file.close()
            self._on_dropped(DROPPED_WRITE_ERROR, len(lines))
            self._warn(f"Cannot write the prediction log {self.path} ({exc.strerror or exc}); dropping rows")
            return
        self._on_written(len(lines))

    def _warn(self, message: str) -> None:
        """One warning a minute at most: a broken disk must not flood the proxy's own log."""
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            _logger.warning(message)
