"""The feedback log: every label a client sent back for a scored row, beside the prediction log.

The line format is ``iris_core.records`` (``make_feedback_record``); the thread, queue,
rotation and drop counting are ``serving.log_writer``'s. One ``POST /feedback`` is one
item, so a list of labels is queued, or dropped, whole.
"""

import time
from collections.abc import Sequence

from iris_core.records import encode, make_feedback_record, timestamp
from serving.log_writer import LogWriter


class FeedbackLogWriter(LogWriter):
    """Logs accepted labels from a background thread; ``submit`` never blocks."""

    kind = "feedback log"

    def submit(self, labels: Sequence[tuple[str, int, str]]) -> bool:
        """Queue ``(request_id, row, class name)`` labels received together; False if they are dropped."""
        return self.put((time.time(), labels))

    def rows(self, item) -> int:
        return len(item[1])

    def lines(self, item) -> list[bytes]:
        epoch, labels = item
        ts = timestamp(epoch)
        return [
            encode(make_feedback_record(ts=ts, request_id=request_id, row=row, label=label))
            for request_id, row, label in labels
        ]
