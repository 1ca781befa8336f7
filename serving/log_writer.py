"""The proxy's log writer: records appended off the request path, in a file rotated by size.

The prediction log and the feedback log are both this writer with their own record
format (``iris_core.records``). Logging never blocks or fails a request: ``put`` adds one
item to a bounded queue and returns; a background thread turns items into lines and
appends them to the file, rotating it by size (``path.1`` ... ``path.N``, like
``logging.handlers.RotatingFileHandler``). A full queue or a failed write drops the rows
and reports them through ``on_dropped``. ``failing`` says whether the file can be written
right now: the thread opens it at start and, while it cannot, tries again every few
seconds, so a fixed disk is noticed without waiting for traffic. The files hold the
requests' data, so they are created readable by their owner only (``serving.private_files``).
"""

import collections
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from serving.private_files import open_private

_logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5
DEFAULT_QUEUE_SIZE = 10_000
DROPPED_QUEUE_FULL = "queue_full"
DROPPED_WRITE_ERROR = "write_error"

_BATCH_ITEMS = 512
_POLL_INTERVAL_S = 0.05
_REOPEN_INTERVAL_S = 5.0
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

    def open(self) -> None:
        """Open the file for appending (and make its directory) unless it is open; OSError if it cannot be written."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open_private(self.path)
            self._size = self._file.tell()

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Write the lines, rotating between two lines when the next would pass ``max_bytes``."""
        self.open()
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
        self.open()

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


class LogWriter:
    """Writes queued items from a background thread; ``put`` never blocks.

    A subclass says how an item becomes lines (``lines``) and how many rows it holds
    (``rows``, for drop counts). Items wait in a deque, whose ``append`` needs no lock, for
    a thread that wakes every ``_POLL_INTERVAL_S`` while idle. ``on_written(n)`` and
    ``on_dropped(reason, n)`` report rows, for the metrics; both may be called from the
    writer thread.
    """

    kind = "log"  # names the thread and the warnings: "prediction log", "feedback log"

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_written: Callable[[int], None] = _ignore,
        on_dropped: Callable[[str, int], None] = _ignore,
    ):
        self.path = Path(path)
        self._file = RotatingFile(path, max_bytes, backup_count)
        self._pending: collections.deque = collections.deque()
        self._queue_size = queue_size
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning = -math.inf
        self.failing = False  # the last attempt to open or write the file failed (read from the event loop)

    # -- what a subclass defines -------------------------------------------------------------

    def lines(self, item) -> list[bytes]:
        raise NotImplementedError

    def rows(self, item) -> int:
        raise NotImplementedError

    # -- the caller's side -------------------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._drain, name=self.kind.replace(" ", "-"), daemon=True)
        self._thread.start()
        return self

    def put(self, item) -> bool:
        """Queue one item; False (and its rows counted as dropped) when the queue is full.

        Call it from one thread (the proxy's event loop) so the bound holds exactly.
        """
        if len(self._pending) >= self._queue_size:
            self._on_dropped(DROPPED_QUEUE_FULL, self.rows(item))
            return False
        self._pending.append(item)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), then stop the thread and close the file."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                _logger.warning(
                    "%s not flushed within %.1f s; %d items not written",
                    self.kind.capitalize(),
                    timeout,
                    len(self._pending),
                )
                return  # the thread still owns the file
            self._thread = None
        self._file.close()

    # -- the writer thread -------------------------------------------------------------------

    def _drain(self) -> None:
        pending = self._pending
        self._try_open()
        last_try = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            items = []
            while pending and len(items) < _BATCH_ITEMS:
                items.append(pending.popleft())
            if items:
                try:
                    self._write(items)
                except Exception:  # a bad item must not end the thread and with it all logging
                    _logger.exception("%s writer failed on a batch; dropping it", self.kind.capitalize())
                    self._on_dropped(DROPPED_WRITE_ERROR, sum(self.rows(item) for item in items))
            elif stopping:
                return
            else:
                if self.failing and time.monotonic() - last_try >= _REOPEN_INTERVAL_S:
                    self._try_open()
                    last_try = time.monotonic()
                self._stop.wait(_POLL_INTERVAL_S)

    def _try_open(self) -> None:
        try:
            self._file.open()
        except OSError as exc:
            self._failed(exc)
        else:
            self.failing = False

    def _write(self, items: list) -> None:
        lines = []
        for item in items:
            try:
                lines += self.lines(item)
            except Exception as exc:  # one bad item costs only its own rows
                self._on_dropped(DROPPED_WRITE_ERROR, self.rows(item))
                self._warn(f"{self.kind.capitalize()}: cannot encode an item ({type(exc).__name__}); dropping it")
        if not lines:
            return
        try:
            self._file.write_lines(lines)
        except OSError as exc:
            self._file.close()
            self._on_dropped(DROPPED_WRITE_ERROR, len(lines))
            self._failed(exc)
            return
        self.failing = False
        self._on_written(len(lines))

    def _failed(self, exc: OSError) -> None:
        self.failing = True
        self._warn(f"Cannot write the {self.kind} {self.path} ({exc.strerror or exc}); dropping rows")

    def _warn(self, message: str) -> None:
        """One warning a minute at most: a broken disk must not flood the proxy's own log."""
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            _logger.warning(message)
