"""A replica's spool: the local directory where the capture's closed files wait, whole, for the store.

Under ``<spool>/<replica>/``:

- ``ready/<path in the capture>``: closed Parquet files not yet in the store. Each is written
  under a name starting with ``.``, synced, and renamed into place, so a crash leaves the
  whole file or a temporary one, which the next start deletes. The uploader
  (``serving.capture.uploader``) takes them oldest first and deletes each once stored; a
  proxy killed with files here uploads them when it starts again with the same spool.
- ``journal/feedback-<seq>.jsonl``: the labels of the open feedback file, one JSON line
  each, synced before the client hears they are kept (``serving.capture.writer``). When
  the file closes, or at the next start after a crash, the journal becomes Parquet files in
  ``ready/`` named after its own ``seq``, so converting it twice writes the same files.
- ``.lock``: held while a proxy uses the spool; a second proxy with the same replica id and
  spool is refused at start, since the two would write the same names.

The spool is bounded in bytes (``--capture-spool-bytes``): a file that would pass the bound
is dropped and counted, and labels are refused (503, to be sent again) rather than taken.
Files are created readable by their owner only: they hold the requests' data.
"""

import contextlib
import fcntl
import heapq
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from iris_core.capture import KINDS, is_capture_file
from serving.errors import ConfigError
from serving.files.private import PRIVATE_MODE

_logger = logging.getLogger(__name__)

COMPRESSION = "zstd"
_JOURNAL_PREFIX, _JOURNAL_SUFFIX = "feedback-", ".jsonl"


@dataclass(frozen=True, order=True)
class Ready:
    """A closed file waiting for the store; ordered by name, which is the replica's sequence."""

    name: str
    relative: str = field(compare=False)  # its path in the capture
    path: Path = field(compare=False)  # where it is in the spool
    size: int = field(compare=False)
    rows: int = field(compare=False)

    @property
    def kind(self) -> str:
        return self.relative.split("/", 1)[0]


class Spool:
    """The files of one replica waiting for the store, and its feedback journals; shared by two threads.

    The writer thread publishes files and writes journals, the uploader thread takes and
    removes files, the event loop reads the counts: every change holds one lock.
    """

    def __init__(self, root: str | Path, replica: str, max_bytes: int):
        self.directory = Path(root).absolute() / replica
        self.ready_directory = self.directory / "ready"
        self.journal_directory = self.directory / "journal"
        self.max_bytes = max_bytes
        self.bytes = 0  # ready files and journals
        self._queue: list[Ready] = []
        self._queued: dict[str, Ready] = {}  # by relative path: a file written again replaces its entry
        self._changed = threading.Condition()
        self._lock_fd: int | None = None

    # -- start and stop (before the threads start, after they stop) ------------------------------

    def open(self) -> list[Path]:
        """Take the spool (``ConfigError`` when another proxy holds it), clean it, and find what a previous
        process left: ready files, queued for the store, and the journals to convert, returned."""
        try:
            for directory in (self.directory, self.ready_directory, self.journal_directory):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
        except OSError as exc:
            raise ConfigError(f"cannot use the capture spool {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"another proxy captures through the spool {self.directory}: give each proxy its own "
                "--capture-replica (or --capture-spool)"
            ) from None
        self._lock_fd = fd
        for path in self.ready_directory.rglob("*"):
            if path.is_file():
                self._found(path)
        journals = []
        for path in sorted(self.journal_directory.iterdir()):
            if path.name.startswith(_JOURNAL_PREFIX) and path.name.endswith(_JOURNAL_SUFFIX):
                journals.append(path)
                self.bytes += path.stat().st_size
        if self._queue or journals:
            _logger.info(
                "capture spool %s: %d files from a previous run to upload, %d feedback journals to close",
                self.directory,
                len(self._queue),
                len(journals),
            )
        return journals

    def _found(self, path: Path) -> None:
        relative = path.relative_to(self.ready_directory).as_posix()
        if not is_capture_file(path.name) or relative.split("/", 1)[0] not in KINDS:
            path.unlink()  # a file whose writing a crash cut short
            return
        try:
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException):
            _logger.warning("capture spool: %s is not a readable Parquet file; deleting it", relative)
            path.unlink()
            return
        ready = Ready(path.name, relative, path, path.stat().st_size, rows)
        self.bytes += ready.size
        self._enqueue(ready)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # -- the bound -------------------------------------------------------------------------------

    def has_room(self, size: int) -> bool:
        with self._changed:
            return self.bytes + size <= self.max_bytes

    def grow(self, size: int) -> None:
        with self._changed:
            self.bytes += size

    def shrink(self, size: int) -> None:
        with self._changed:
            self.bytes -= size

    @property
    def ready_files(self) -> int:
        return len(self._queue)

    # -- ready files -----------------------------------------------------------------------------

    def publish(self, relative: str, table: pa.Table) -> Ready:
        """Write a closed file into ``ready/``, whole and synced (OSError otherwise, leaving nothing behind)."""
        final = self.ready_directory / relative
        staged = final.with_name(f".{final.name}.writing")
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_MODE)
            with os.fdopen(fd, "wb") as file:
                pq.write_table(table, file, compression=COMPRESSION)
                file.flush()
                os.fsync(file.fileno())
            os.replace(staged, final)
            sync_directory(final.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                staged.unlink()
            raise
        ready = Ready(final.name, relative, final, final.stat().st_size, table.num_rows)
        with self._changed:
            if (earlier := self._queued.get(relative)) is not None:  # a journal converted again after a crash
                self._forget(earlier)
            self.bytes += ready.size
        self._enqueue(ready)
        return ready

    def _enqueue(self, ready: Ready) -> None:
        with self._changed:
            heapq.heappush(self._queue, ready)
            self._queued[ready.relative] = ready
            self._changed.notify_all()

    def _forget(self, ready: Ready) -> None:
        """Take a file's entry out of the queue (holding the lock)."""
        if self._queue and self._queue[0] is ready:
            heapq.heappop(self._queue)
        else:
            self._queue.remove(ready)
            heapq.heapify(self._queue)
        del self._queued[ready.relative]
        self.bytes -= ready.size

    def next(self, timeout: float) -> Ready | None:
        """The oldest file waiting, once there is one (None after ``timeout`` seconds)."""
        with self._changed:
            if not self._queue:
                self._changed.wait(timeout)
            return self._queue[0] if self._queue else None

    def remove(self, ready: Ready) -> None:
        """The store holds the file (or it is gone): delete it from the spool."""
        with self._changed:
            if self._queued.get(ready.relative) is not ready:
                return  # written again meanwhile: the new file waits for its own upload
            with contextlib.suppress(FileNotFoundError):
                ready.path.unlink()
            self._forget(ready)

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- journals --------------------------------------------------------------------------------

    def journal_path(self, seq: int) -> Path:
        return self.journal_directory / f"{_JOURNAL_PREFIX}{seq:016d}{_JOURNAL_SUFFIX}"

    @staticmethod
    def journal_seq(path: Path) -> int:
        return int(path.name[len(_JOURNAL_PREFIX) : -len(_JOURNAL_SUFFIX)])

    def drop_journal(self, path: Path) -> None:
        """The journal's labels are in ready files: it goes."""
        size = path.stat().st_size
        path.unlink()
        sync_directory(path.parent)
        self.shrink(size)


def sync_directory(directory: Path) -> None:
    """A rename or a deletion in ``directory`` on the disk, so a crash right after it keeps it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
