"""The prediction log's writer: records appended off the request path, in a file rotated by size.

The line format is ``iris_core.records`` (the ``monitor`` step reads it back from there).
Logging never blocks or fails a request: ``submit`` puts one item per request into a
bounded queue and returns; a background thread turns items into lines and appends them
to the file, rotating it by size (``path.1`` ... ``path.N``, like
``logging.handlers.RotatingFileHandler``). A full queue or a failed write drops the rows
and reports them through ``on_dropped``.
"""

import collections
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from iris_core.records import encode, make_record, timestamp

_logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5
DEFAULT_QUEUE_SIZE = 10_000
DROPPED_QUEUE_FULL = "queue_full"
DROPPED_WRITE_ERROR = "write_error"

_BATCH_ITEMS = 512
_POLL_INTERVAL_S = 0.05
_WARN_INTERVAL_S = 60.0


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
        self,
        *,
        request_id: str,
        model_name: str,
        model_version: str | None,
        rows: Sequence,
        predictions: Sequence[Mapping],
        latency_ms: float,
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
                _logger.warning(
                    "Prediction log not flushed within %.1f s; %d requests not written", timeout, len(self._pending)
                )
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
                lines.append(
                    encode(
                        make_record(
                            ts=ts,
                            request_id=request_id,
                            model_name=model_name,
                            model_version=model_version,
                            features=features,
                            prediction=output["prediction"],
                            confidence=output["confidence"],
                            latency_ms=latency_ms,
                        )
                    )
                )
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
