"""The capture writer: every answered request's rows and every label, into Parquet files closed by age or size.

The event loop only queues (``submit_predictions``, ``submit_labels``: a tuple and a deque
append, ``serving.files.log_writer.QueuedWriter``); one thread does the rest. It keeps one open
predictions file per model version in memory (``serving.capture.columns``), and closes it
into the spool (``serving.capture.spool``) after ``file_seconds`` or ``file_rows`` rows,
when its hour ends, or when the open files hold half the buffer; the uploader thread takes
it from there. Memory is bounded in rows: what is queued plus what the open files hold
never passes ``max_buffered_rows``, and a request that would pass it is dropped and counted
(``queue_full``), as is a closed file the spool has no room for (``spool_full``) or cannot
write (``write_error``). Nothing here ever waits for the store.

Labels are kept as the hardened feedback log keeps them: a request's labels are one whole
line each in the open feedback file's journal, synced to disk before ``done(True)`` tells
``POST /feedback`` to answer 200; a journal that cannot be written (or a spool with no room)
answers ``done(False)``, and the client gets 503 and sends them again. When the feedback file
closes, its journal becomes Parquet files, one per model version and hour. A proxy killed
with SIGKILL loses the rows of its open predictions files and of its queue, never a label it
acknowledged nor a closed file: both are on disk, and the next start with the same spool
uploads them. SIGTERM closes every open file first (``close``).
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from iris_core.capture import FEEDBACK, HOUR_S, PREDICTIONS, FileSequence, Partition, file_name
from serving.capture.columns import OpenPredictions, feedback_table
from serving.capture.spool import Spool
from serving.files.log_writer import DROPPED_WRITE_ERROR, QueuedWriter, RotatingFile

_logger = logging.getLogger(__name__)

DROPPED_SPOOL_FULL = "spool_full"
_RETRY_JOURNAL_S = 5.0


@dataclass
class _Journal:
    """The open feedback file: its labels are lines on disk until it closes."""

    seq: int
    hour: int
    file: RotatingFile
    opened: float
    rows: int = 0


def _ignore(*_args) -> None:
    pass


class CaptureWriter(QueuedWriter):
    kind = "capture"

    def __init__(
        self,
        spool: Spool,
        replica: str,
        *,
        file_rows: int,
        file_seconds: float,
        max_buffered_rows: int | None = None,
        on_dropped: Callable[[str, str, int], None] = _ignore,
        clock=time.time,
        monotonic=time.monotonic,
    ):
        self.max_buffered_rows = max_buffered_rows or 2 * file_rows
        super().__init__(max_queued_rows=self.max_buffered_rows, on_dropped=self._dropped)
        self.spool, self.replica = spool, replica
        self.file_rows, self.file_seconds = file_rows, file_seconds
        self._report_dropped = on_dropped  # (kind, reason, rows), for the metrics
        self._clock, self._monotonic = clock, monotonic
        self._sequence = FileSequence(clock)
        self._open: dict[tuple[str, str], OpenPredictions] = {}  # (model, version) -> its open file
        self.open_rows = 0  # rows the open predictions files hold (writer thread; read by the event loop)
        self._journal: _Journal | None = None
        self._unconverted: list[Path] = []  # journals to turn into files, left by a crash or a failed close
        self._last_retry = 0.0
        self.failing = False  # the spool could not be written the last time (read by the event loop)
        self.files_closed = 0

    # -- the event loop's side ---------------------------------------------------------------

    def submit_predictions(
        self,
        *,
        request_id: str,
        model_name: str,
        model_version: str | None,
        names: Sequence[str],
        rows: Sequence,
        predictions: Sequence,
        latency_ms: float,
        epoch: float | None = None,
    ) -> bool:
        """Queue one answered request's rows (in the order of ``names``); False when the buffer is full."""
        item = (PREDICTIONS, self._clock() if epoch is None else epoch, request_id, model_name, model_version)
        return self.put((*item, names, rows, predictions, latency_ms))

    def submit_labels(
        self,
        model_name: str,
        labels: Sequence[tuple],
        done: Callable[[bool], None] | None = None,
        epoch: float | None = None,
    ) -> bool:
        """Queue ``(request_id, row, class name, version that answered or None[, model that answered or None])``
        labels received together, each under its answering model when it names one, else under ``model_name``;
        ``done(kept)`` is called from the writer thread once they are on disk, or will never be. False, and
        nothing counted as dropped, when the buffer is full: the client is refused and sends them again."""
        if self.buffered_rows + len(labels) > self.max_buffered_rows:
            return False
        return self.put((FEEDBACK, self._clock() if epoch is None else epoch, model_name, labels), done)

    def rows(self, item) -> int:
        return len(item[6]) if item[0] == PREDICTIONS else len(item[3])

    @property
    def buffered_rows(self) -> int:
        return self.queued_rows + self.open_rows

    def _dropped(self, reason: str, rows: int) -> None:
        """The queue's drops: predictions only, since labels are refused before they are queued when it is full."""
        self._report_dropped(PREDICTIONS, reason, rows)

    # -- the writer thread -------------------------------------------------------------------

    def recover(self, journals: list[Path]) -> None:
        """Journals a previous process left (acknowledged labels): the thread converts them before anything else."""
        self._unconverted.extend(journals)

    def _drain(self) -> None:
        if self._unconverted:
            self._retry_journals()
        super()._drain()

    def _handle(self, batch: list) -> None:
        for entry in batch:
            item, rows, _ = entry
            if item[0] == FEEDBACK:
                self._add_labels(entry)
                continue
            try:
                self._add_predictions(item)
            except (TypeError, ValueError) as exc:  # rows that do not fit their names cost only themselves
                self._settle([entry], written=0)
                self._warn(f"Capture: cannot take a request's rows ({type(exc).__name__}); dropping them")
            else:
                self._settle([entry], written=1)  # into an open file: counted in open_rows already
        self._close_due()

    def _idle(self) -> None:
        self._close_due()
        if self._unconverted and self._monotonic() - self._last_retry >= _RETRY_JOURNAL_S:
            self._retry_journals()

    def _finish(self) -> None:
        """Stopping: every open file closes into the spool."""
        for key in list(self._open):
            self._close_predictions(key)
        self._close_journal()
        self._retry_journals()

    # predictions

    def _add_predictions(self, item) -> None:
        _, epoch, request_id, model, version, names, rows, predictions, latency_ms = item
        partition = Partition.of(PREDICTIONS, model, version, epoch)
        key = (model, partition.version)
        current = self._open.get(key)
        if current is not None and (current.partition != partition or current.names != tuple(names)):
            self._close_predictions(key)  # a new hour (or other features): the file is complete
            current = None
        if current is None:
            current = self._open[key] = OpenPredictions(partition, names, self._monotonic())
        current.add(epoch, request_id, version, rows, predictions, latency_ms)
        self.open_rows += len(rows)
        if current.rows >= self.file_rows:
            self._close_predictions(key)

    def _close_predictions(self, key: tuple[str, str]) -> None:
        closing = self._open.pop(key)
        if not closing.rows:
            return
        try:
            if self.spool.bytes >= self.spool.max_bytes:
                self._report_dropped(PREDICTIONS, DROPPED_SPOOL_FULL, closing.rows)
                self._warn(f"Capture: the spool {self.spool.directory} is full (the store is behind); dropping rows")
                return
            relative = f"{closing.partition.path}/{file_name(self.replica, self._sequence.next())}"
            try:
                with self._blocking():
                    self.spool.publish(relative, closing.table())
            except OSError as exc:
                self.failing = True
                self._report_dropped(PREDICTIONS, DROPPED_WRITE_ERROR, closing.rows)
                self._warn(f"Capture: cannot write to the spool {self.spool.directory} ({exc.strerror or exc})")
                return
            self.failing = False
            self.files_closed += 1
        finally:
            self.open_rows -= closing.rows

    def _close_due(self) -> None:
        now = self._monotonic()
        for key, open_file in list(self._open.items()):
            if now - open_file.opened >= self.file_seconds:
                self._close_predictions(key)
        while self._open and self.open_rows > self.max_buffered_rows // 2:
            self._close_predictions(max(self._open, key=lambda k: self._open[k].rows))
        journal = self._journal
        if journal is not None and now - journal.opened >= self.file_seconds:
            self._close_journal()

    # labels

    def _add_labels(self, entry) -> None:
        (_, epoch, model, labels), rows, _ = entry
        hour = int(epoch // HOUR_S) * HOUR_S
        if self._journal is not None and self._journal.hour != hour:
            self._close_journal()
        journal = self._journal
        if journal is None:
            seq = self._sequence.next()
            journal = self._journal = _Journal(
                seq, hour, RotatingFile(self.spool.journal_path(seq), max_bytes=0, sync=True), self._monotonic()
            )
        try:
            blob = b"".join(
                orjson.dumps(
                    {
                        "ts": epoch,
                        "request_id": request_id,
                        "row": row,
                        "label": label,
                        "model_name": (answered_by and answered_by[0]) or model,
                        "model_version": version,
                    }
                )
                + b"\n"
                for request_id, row, label, version, *answered_by in labels
            )
        except (TypeError, ValueError):
            self._settle_labels(entry, kept=False)
            return
        if not self.spool.has_room(len(blob)):
            self._settle_labels(entry, kept=False)
            self._warn(f"Capture: the spool {self.spool.directory} is full; labels refused (503)")
            return
        with self._blocking():
            _, error = journal.file.write_items([blob])
        if error is not None:
            self.failing = True
            self._settle_labels(entry, kept=False)
            self._warn(f"Capture: cannot write the labels' journal ({error.strerror or error}); labels refused (503)")
            return
        self.failing = False
        self.spool.grow(len(blob))
        journal.rows += rows
        self._settle_labels(entry, kept=True)
        if journal.rows >= self.file_rows:
            self._close_journal()

    def _settle_labels(self, entry, kept: bool) -> None:
        """Labels refused are not dropped rows: the client hears 503 and sends them again."""
        _, rows, done = entry
        self._rows_out += rows
        if done is not None:
            done(kept)

    def _close_journal(self) -> None:
        journal, self._journal = self._journal, None
        if journal is None:
            return
        journal.file.close()
        if journal.rows or journal.file.path.exists():
            self._unconverted.append(journal.file.path)
            self._retry_journals()

    def _retry_journals(self) -> None:
        self._last_retry = self._monotonic()
        left = []
        for path in self._unconverted:
            try:
                with self._blocking():
                    self._convert(path)
            except OSError as exc:
                left.append(path)
                self.failing = True
                self._warn(f"Capture: cannot close the labels' journal {path.name} ({exc.strerror or exc}); retrying")
        self._unconverted = left

    def _convert(self, path: Path) -> None:
        """A journal's labels as Parquet files in the spool, one per partition, named after the journal's seq."""
        seq = Spool.journal_seq(path)
        partitions: dict[Partition, list[dict]] = {}
        with open(path, "rb") as lines:
            for line in lines:
                try:
                    label = orjson.loads(line)
                    partition = Partition.of(FEEDBACK, label["model_name"], label["model_version"], label["ts"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # the end of a line a crash cut: its labels were never acknowledged
                partitions.setdefault(partition, []).append(label)
        for partition, labels in sorted(partitions.items()):
            self.spool.publish(f"{partition.path}/{file_name(self.replica, seq)}", feedback_table(labels))
            self.files_closed += 1
        self.spool.drop_journal(path)
