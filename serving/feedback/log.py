"""The feedback log: every label a client sent back for a scored row, beside the prediction log.

The line format is ``iris_core.records`` (``make_feedback_record``); the thread, queue,
rotation and drop counting are ``serving.files.log_writer``'s. One ``POST /feedback`` is one
item, so a list of labels is queued, written, or dropped, whole; each write is on the disk
(``fsync``) before the labels count as written, since a client is told they are kept.
"""

import time
from collections.abc import Callable, Sequence

from iris_core.records import encode, make_feedback_record, timestamp
from serving.files.log_writer import LogWriter


class FeedbackLogWriter(LogWriter):
    """Logs accepted labels from a background thread; ``submit`` never blocks."""

    kind = "feedback log"
    sync = True

    def submit(self, labels: Sequence[tuple], done: Callable[[bool], None] | None = None) -> bool:
        """Queue ``(request_id, row, class name, ...)`` labels received together; False if they are dropped.

        ``done(written)`` is called from the writer thread once they are in the file, or will never be.
        """
        return self.put((time.time(), labels), done)

    def rows(self, item) -> int:
        return len(item[1])

    def lines(self, item) -> list[bytes]:
        epoch, labels = item
        ts = timestamp(epoch)
        return [
            encode(make_feedback_record(ts=ts, request_id=request_id, row=row, label=label))
            for request_id, row, label, *_ in labels
        ]
