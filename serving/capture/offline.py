"""The capture's writer without a proxy: records given with their own times, written as a proxy would write them.

For what must fill a capture faster than live traffic could (the capture benchmark, the
steps' tests): the same writer, spool, uploader and store as ``serving.capture.recorder``
wires, so the files, their names and their layout are the proxy's own. A submit waits for
room instead of dropping, and leaving the block closes every file into the store.
"""

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from serving.capture.spool import Spool
from serving.capture.stores import open_store
from serving.capture.uploader import Uploader
from serving.capture.writer import CaptureWriter


class OfflineCapture:
    def __init__(self, writer: CaptureWriter):
        self.writer = writer

    def predictions(
        self,
        epoch: float,
        request_id: str,
        names: Sequence[str],
        rows: Sequence,
        predictions: Sequence,
        model_name: str = "iris",
        model_version: str | None = "1",
        latency_ms: float = 2.0,
    ) -> None:
        self._room(len(rows))
        self.writer.submit_predictions(
            request_id=request_id,
            model_name=model_name,
            model_version=model_version,
            names=names,
            rows=rows,
            predictions=predictions,
            latency_ms=latency_ms,
            epoch=epoch,
        )

    def labels(self, epoch: float, labels: Sequence[tuple[str, int, str, str | None]], model_name: str = "iris"):
        self._room(len(labels))
        if not self.writer.submit_labels(model_name, labels, epoch=epoch):
            raise RuntimeError("the capture refused labels")

    def _room(self, rows: int) -> None:
        if rows > self.writer.max_buffered_rows:
            raise ValueError(f"{rows} rows at once is more than the buffer holds")
        while self.writer.buffered_rows + rows > self.writer.max_buffered_rows:
            time.sleep(0.001)


@contextlib.contextmanager
def offline_capture(
    location: str, spool: str | Path, replica: str, file_rows: int = 50_000
) -> Iterator[OfflineCapture]:
    """Write into ``location`` as replica ``replica``; files close by rows and at the end of each hour."""
    store = open_store(location)
    spool = Spool(spool, replica, max_bytes=2**62)
    writer = CaptureWriter(
        spool, replica, file_rows=file_rows, file_seconds=math.inf, max_buffered_rows=max(2 * file_rows, 1_000_000)
    )
    writer.recover(spool.open())
    uploader = Uploader(spool, store)
    writer.start()
    uploader.start()
    try:
        yield OfflineCapture(writer)
    finally:
        writer.close(timeout=600)
        uploader.close(timeout=600)
        spool.close()
