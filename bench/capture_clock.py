"""A capture whose clock counts rows: the proxy's own writer, one hour passing every ``rows_per_hour`` rows.

The capture benchmark needs ten million rows spread over several hours of partitions, and
a real proxy stamps each request with the time it answered: all of them would land in one
or two hours. Its proxy runs with this writer in place of ``CaptureWriter`` (patched in that
process only, ``PROXY_WITH_ROW_CLOCK``): a request is stamped with the time its first row
gives, ``start`` plus an hour per ``rows_per_hour`` rows answered before it, and a label
with the time of the rows answered so far. Everything else (the proxy, its writer thread,
files closed by rows and at the end of each hour, the spool and the store) is the proxy's.
"""

import os

from iris_core.capture import HOUR_S
from serving.capture.writer import CaptureWriter

START_ENV = "BENCH_CAPTURE_START"  # epoch seconds of the first row
ROWS_PER_HOUR_ENV = "BENCH_CAPTURE_ROWS_PER_HOUR"

PROXY_WITH_ROW_CLOCK = (
    "import sys, serving.capture.recorder, serving.cli; from bench.capture_clock import RowClockWriter; "
    "serving.capture.recorder.CaptureWriter = RowClockWriter; serving.cli.main(sys.argv[1:])"
)


def row_time(start: float, rows_per_hour: int, rows_before: int) -> float:
    """The time of a row with ``rows_before`` rows answered before it."""
    return start + rows_before * HOUR_S / rows_per_hour


class RowClockWriter(CaptureWriter):
    def __init__(self, *args, **kwargs):
        start, per_hour = float(os.environ[START_ENV]), int(os.environ[ROWS_PER_HOUR_ENV])
        self.rows_answered = 0  # the event loop's
        super().__init__(*args, clock=lambda: row_time(start, per_hour, self.rows_answered), **kwargs)

    def submit_predictions(self, *, rows, **kwargs) -> bool:
        queued = super().submit_predictions(rows=rows, **kwargs)  # stamped with the time of its first row
        self.rows_answered += len(rows)
        return queued
