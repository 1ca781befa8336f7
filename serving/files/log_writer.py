"""The proxy's log writer: records appended off the request path, in a file rotated by size.

The prediction log and the feedback log are both this writer with their own record
format (``iris_core.records``); its queue and thread (``QueuedWriter``) serve the capture
(``serving.capture``) too. Logging never blocks or fails a request: ``put`` adds one
item to a queue bounded in rows (``max_queued_rows``, so its memory is bounded whatever
the requests' sizes) and returns; a background thread turns items into lines and
appends them to the file, rotating it by size (``path.1`` ... ``path.N``, like
``logging.handlers.RotatingFileHandler``). A full queue or a failed write drops the rows
and reports them through ``on_dropped``. ``failing`` says whether the file can be written
right now: the thread opens it at start and, while it cannot, tries again every few
seconds, so a fixed disk is noticed without waiting for traffic. ``stalled`` says that an
open or a write has not returned for ``STALL_AFTER_S`` (a disk or a reader that stopped
without an error); the queue then fills to its bound and drops. The files hold the
requests' data, so they are created readable by their owner only (``serving.files.private``).

An item is whole in the file or not there at all: each item's lines are written in one
piece, and a write that fails is cut back (``ftruncate``) to where the file ended before
it, so no partial line is left for the next write to be glued onto. A file that ends in a
partial line (a crash during a write) has that fragment cut before anything is appended.
``put`` may be given ``done(written)``, called from the writer thread once the item is in
the file (flushed to the kernel, and with ``sync`` on the disk) or refused, so a caller
can acknowledge only what is written. The written-rows count is exactly what the files
gained. A log path that is not a regular file (a pipe, ``/dev/stdout``) is written to as
it is: never rotated, repaired or cut back.
"""

import collections
import contextlib
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from serving.files.private import open_private

_logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5
DEFAULT_QUEUE_ROWS = 20_000  # ~17 MB of queued rows at ~850 bytes each: two requests at the row limit
STALL_AFTER_S = 5.0  # an open or a write that has not returned by then is a stall
DROPPED_QUEUE_FULL = "queue_full"
DROPPED_WRITE_ERROR = "write_error"

_BATCH_ITEMS = 512
_POLL_INTERVAL_S = 0.05
_REOPEN_INTERVAL_S = 5.0
_WARN_INTERVAL_S = 60.0


class RotatingFile:
    """Appends bytes to ``path``; past ``max_bytes`` it shifts ``path`` to ``path.1`` and so on.

    At most ``backup_count`` old files are kept; ``max_bytes=0`` never rotates. A single
    item longer than ``max_bytes`` still goes into a file of its own. With ``sync``, each
    write is on the disk (``fsync``) before it counts as written.
    """

    def __init__(
        self,
        path: str | Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT,
        sync: bool = False,
    ):
        if max_bytes < 0 or backup_count < 1:
            raise ValueError("max_bytes must be >= 0 and backup_count >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.sync = sync
        self._file = None
        self._size = 0
        self._regular = True  # a pipe or a device is written to as it is: never rotated, repaired or cut back

    def open(self) -> None:
        """Open the file for appending (and make its directory) unless it is open; OSError if it cannot be written.

        A regular file that does not end with a newline lost the end of its last line in a
        crash: that fragment is cut off first, so that the next line starts a line of its own.
        """
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = open_private(self.path, buffering=0)
            try:
                self._regular = stat.S_ISREG(os.fstat(file.fileno()).st_mode)
                self._size = _cut_partial_line(file.fileno(), self.path) if self._regular else 0
            except BaseException:
                file.close()
                raise
            self._file = file

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Write each line as an item of its own; the OSError of a failed write is raised."""
        written, error = self.write_items(lines)
        if error is not None:
            raise error

    def write_items(self, items: Sequence[bytes]) -> tuple[int, OSError | None]:
        """Append each item (its lines, joined) whole, rotating between items; how many were written, and why not all.

        The items before a rotation are written (and counted) before it; a write that
        fails is cut back to where the file ended before it, so the items it held are
        not in the file at all.
        """
        try:
            self.open()
        except OSError as exc:
            return 0, exc
        written, chunk, size = 0, [], self._size
        for item in items:
            if self._regular and self.max_bytes and size and size + len(item) > self.max_bytes:
                if (error := self._append(chunk)) is not None:
                    return written, error
                written, chunk = written + len(chunk), []
                try:
                    self._rotate()
                except OSError as exc:
                    self.close()
                    return written, exc
                size = self._size
            chunk.append(item)
            size += len(item)
        if (error := self._append(chunk)) is not None:
            return written, error
        return written + len(chunk), None

    def _append(self, chunk: list[bytes]) -> OSError | None:
        """Write the chunk in full, or cut the file back to where it ended before it and close it."""
        if not chunk:
            return None
        data, fd, start = b"".join(chunk), self._file.fileno(), self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]  # a short write (a disk filling up) writes the rest or fails
            if self.sync:
                os.fsync(fd)
        except OSError as exc:
            if self._regular:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            self.close()
            return exc
        self._size += len(data)
        return None

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


def _cut_partial_line(fd: int, path: Path) -> int:
    """Cut a regular file back to its last newline, unless it ends with one; its size then."""
    size = os.fstat(fd).st_size
    if not size:
        return 0
    with open(path, "rb") as reader:  # the log is opened write-only: its tail is read apart
        reader.seek(size - 1)
        if reader.read(1) == b"\n":
            return size
        end = size
        while end:
            start = max(0, end - 64 * 1024)
            reader.seek(start)
            newline = reader.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
    os.ftruncate(fd, end)
    _logger.warning("%s ended in a partial line (a crash during a write?): cut its last %d bytes", path, size - end)
    return end


def _ignore(*_args) -> None:
    pass


class QueuedWriter:
    """Items queued by the proxy's event loop and handled by a background thread; ``put`` never blocks.

    A subclass says how many rows an item holds (``rows``, for the queue's bound and the
    counts) and what the thread does with a batch of items (``_handle``), between batches
    when the queue is empty (``_idle``) and once it is stopped and drained (``_finish``).
    Items wait in a deque, whose ``append`` needs no lock, for a thread that wakes every
    ``_POLL_INTERVAL_S`` while idle. The rows queued are what ``put`` added (the event loop's
    count) less what the thread settled (its own count), so neither side takes a lock.
    ``on_written(n)`` and ``on_dropped(reason, n)`` report rows, for the metrics; both may be
    called from the writer thread.
    """

    kind = "writer"  # names the thread and the warnings: "prediction log", "capture"

    def __init__(
        self,
        *,
        max_queued_rows: int = DEFAULT_QUEUE_ROWS,
        on_written: Callable[[int], None] = _ignore,
        on_dropped: Callable[[str, int], None] = _ignore,
    ):
        self._pending: collections.deque = collections.deque()
        self.max_queued_rows = max_queued_rows
        self._rows_in = 0  # rows ``put`` queued (event loop)
        self._rows_out = 0  # rows the thread settled (writer thread)
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning = -math.inf
        self._busy_since: float | None = None  # when the blocking call now under way began (writer thread)

    # -- what a subclass defines -------------------------------------------------------------

    def rows(self, item) -> int:
        raise NotImplementedError

    def _handle(self, batch: list) -> None:
        """Handle ``(item, rows, done)`` entries in the thread, settling each (``_settle``)."""
        raise NotImplementedError

    def _idle(self) -> None:
        """Called in the thread about every ``_POLL_INTERVAL_S`` while the queue is empty."""

    def _finish(self) -> None:
        """Called in the thread once it is told to stop and the queue is drained."""

    # -- the caller's side -------------------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._drain, name=self.kind.replace(" ", "-"), daemon=True)
        self._thread.start()
        return self

    def put(self, item, done: Callable[[bool], None] | None = None) -> bool:
        """Queue one item; False (and its rows counted as dropped) when its rows would pass the bound.

        ``done(written)`` is called from the writer thread once the item is kept (True) or
        will never be (False). Call ``put`` from one thread (the proxy's event loop) so the
        bound holds exactly.
        """
        rows = self.rows(item)
        if self.buffered_rows + rows > self.max_queued_rows:
            self._on_dropped(DROPPED_QUEUE_FULL, rows)
            return False
        self._rows_in += rows
        self._pending.append((item, rows, done))
        return True

    @property
    def queued_rows(self) -> int:
        """Rows queued or being handled: what the queue holds in memory."""
        return self._rows_in - self._rows_out

    @property
    def buffered_rows(self) -> int:
        """The rows the bound counts: those queued, and any a subclass holds beyond the queue."""
        return self.queued_rows

    @property
    def stalled(self) -> bool:
        """A blocking call of the thread has not returned for ``STALL_AFTER_S``: the disk (or store) stopped."""
        since = self._busy_since
        return since is not None and time.monotonic() - since >= STALL_AFTER_S

    def close(self, timeout: float = 5.0) -> bool:
        """Handle what is queued (bounded by ``timeout``), then stop the thread; False if it did not stop in time."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                _logger.warning(
                    "%s not flushed within %.1f s; %d rows not written",
                    self.kind.capitalize(),
                    timeout,
                    self.buffered_rows,
                )
                return False
            self._thread = None
        return True

    # -- the writer thread -------------------------------------------------------------------

    def _drain(self) -> None:
        pending = self._pending
        while True:
            stopping = self._stop.is_set()
            batch = []
            while pending and len(batch) < _BATCH_ITEMS:
                batch.append(pending.popleft())
            if batch:
                try:
                    self._handle(batch)
                except Exception:  # a bad item must not end the thread and with it all writing
                    _logger.exception("%s writer failed on a batch; dropping it", self.kind.capitalize())
                    self._settle(batch, written=0)
            elif stopping:
                self._finish()
                return
            else:
                self._idle()
                self._stop.wait(_POLL_INTERVAL_S)

    @contextlib.contextmanager
    def _blocking(self):
        """Around a call that may not return (a write, an open, an upload): ``stalled`` watches it."""
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None

    def _settle(self, batch: list, written: int, reason: str = DROPPED_WRITE_ERROR) -> None:
        """The first ``written`` entries are kept, the others dropped for ``reason``: count them, tell whoever waits."""
        rows_written = sum(rows for _, rows, _ in batch[:written])
        rows_dropped = sum(rows for _, rows, _ in batch[written:])
        self._rows_out += rows_written + rows_dropped
        if rows_written:
            self._on_written(rows_written)
        if rows_dropped:
            self._on_dropped(reason, rows_dropped)
        for index, (_, _, done) in enumerate(batch):
            if done is not None:
                done(index < written)

    def _warn(self, message: str) -> None:
        """One warning a minute at most: a broken disk must not flood the proxy's own log."""
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            _logger.warning(message)


class LogWriter(QueuedWriter):
    """Writes queued items to a rotating file from a background thread; ``put`` never blocks.

    A subclass says how an item becomes lines (``lines``) and how many rows it holds (``rows``).
    """

    kind = "log"  # names the thread and the warnings: "prediction log", "feedback log"
    sync = False  # fsync each write: for records a client is told are kept

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT,
        max_queued_rows: int = DEFAULT_QUEUE_ROWS,
        on_written: Callable[[int], None] = _ignore,
        on_dropped: Callable[[str, int], None] = _ignore,
    ):
        super().__init__(max_queued_rows=max_queued_rows, on_written=on_written, on_dropped=on_dropped)
        self.path = Path(path)
        self._file = RotatingFile(path, max_bytes, backup_count, sync=self.sync)
        self._last_try = -math.inf
        self.failing = False  # the last attempt to open or write the file failed (read from the event loop)

    def lines(self, item) -> list[bytes]:
        raise NotImplementedError

    def health(self) -> dict:
        state = "stalled" if self.stalled else "failing" if self.failing else "ok"
        return {
            "path": str(self.path),
            "state": state,
            "queued_rows": self.queued_rows,
            "max_queued_rows": self.max_queued_rows,
        }

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (bounded by ``timeout``), then stop the thread and close the file."""
        if not super().close(timeout):
            return False  # the thread still owns the file
        self._file.close()
        return True

    # -- the writer thread -------------------------------------------------------------------

    def _drain(self) -> None:
        self._try_open()
        super()._drain()

    def _idle(self) -> None:
        if self.failing and time.monotonic() - self._last_try >= _REOPEN_INTERVAL_S:
            self._try_open()

    def _try_open(self) -> None:
        self._last_try = time.monotonic()
        try:
            with self._blocking():
                self._file.open()
        except OSError as exc:
            self._failed(exc)
        else:
            self.failing = False

    def _handle(self, batch: list) -> None:
        encoded, blobs = [], []
        for entry in batch:
            try:
                blobs.append(b"".join(self.lines(entry[0])))
            except Exception as exc:  # one bad item costs only its own rows
                self._settle([entry], written=0)
                self._warn(f"{self.kind.capitalize()}: cannot encode an item ({type(exc).__name__}); dropping it")
            else:
                encoded.append(entry)
        if not encoded:
            return
        with self._blocking():
            written, error = self._file.write_items(blobs)
        self._settle(encoded, written)
        if error is not None:
            self._failed(error)
        else:
            self.failing = False

    def _failed(self, exc: OSError) -> None:
        self.failing = True
        self._warn(f"Cannot write the {self.kind} {self.path} ({exc.strerror or exc}); dropping rows")
