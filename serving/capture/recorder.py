"""The capture's seam in the proxy: a recorder per answered request, a sink for labels, and what it shows.

``install`` is called where ``serving.observability.monitoring`` plugs in the prediction log. It checks the
location and takes the spool before the proxy listens (a bad ``--capture-uri`` or a spool
another proxy holds is a one-line error at start), adds ``Capture.record`` to the proxy's
recorders, and starts and stops the writer and the uploader with the app. ``record`` runs
on the event loop after each answer is built and only queues; ``labels`` is what
``serving.feedback.service`` writes accepted labels to instead of a feedback log.

``/health`` shows the capture under ``capture`` (its details need the token, as the others
do), and a store that is down never makes the proxy unhealthy: answers go on, files wait in
the spool. Metrics (``proxy_capture_*``):

- ``proxy_capture_stored_rows_total{kind}`` and ``proxy_capture_stored_files_total``: rows
  (``predictions``, ``feedback``) and files the store took;
- ``proxy_capture_dropped_rows_total{reason}``: answered rows not captured: ``queue_full``
  (past the buffer), ``spool_full`` (the store was behind for too long), ``write_error``;
- ``proxy_capture_buffered_rows``: rows queued or in open files (at most the buffer);
- ``proxy_capture_spool_files`` and ``proxy_capture_spool_bytes``: what waits for the store;
- ``proxy_capture_upload_failures_total`` and ``proxy_capture_store_up`` (0 while uploads fail);
- ``proxy_capture_stalled``: 1 while a write to the spool has not returned for a while.
"""

import asyncio
import logging
import os

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from iris_core.capture import KINDS
from iris_core.redaction import redact
from serving.capture.spool import Spool
from serving.capture.stores import open_store
from serving.capture.uploader import Uploader
from serving.capture.writer import DROPPED_SPOOL_FULL, CaptureWriter
from serving.files.log_writer import DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR

_logger = logging.getLogger(__name__)

PREFIX = "proxy"
CLOSE_TIMEOUT_S = 5.0  # for the writer thread to close every open file into the spool
FLUSH_TIMEOUT_S = 10.0  # for the uploader to empty the spool at shutdown; what is left stays for the next start
DROP_REASONS = (DROPPED_QUEUE_FULL, DROPPED_SPOOL_FULL, DROPPED_WRITE_ERROR)


class Capture:
    """One proxy's capture: writer, spool, uploader and store, and their counts."""

    def __init__(self, config, model_name: str, env=os.environ):
        self.location = redact(config.capture_uri)
        self.replica = config.capture_replica
        self.model_name = model_name
        self.store = open_store(config.capture_uri, env)
        self.spool = Spool(config.capture_spool, config.capture_replica, config.capture_spool_bytes)
        self.writer = CaptureWriter(
            self.spool,
            config.capture_replica,
            file_rows=config.capture_file_rows,
            file_seconds=config.capture_file_seconds,
            max_buffered_rows=buffer_rows(config),
            on_dropped=self._dropped,
        )
        self.uploader = Uploader(self.spool, self.store, on_stored=self._stored)
        self.stored_rows = dict.fromkeys(KINDS, 0)  # the uploader thread's
        self.dropped_rows = dict.fromkeys(DROP_REASONS, 0)  # queue_full: the event loop's; the others the writer's
        self.labels = CapturedLabels(self)

    def open(self) -> None:
        """Take the spool and pick up what a previous run left in it; ``ConfigError`` when another proxy holds it."""
        self.writer.recover(self.spool.open())

    def start(self) -> None:
        self.writer.start()
        self.uploader.start()
        _logger.info(
            "capturing every answered row and label to %s as replica %s (spool %s)",
            self.location,
            self.replica,
            self.spool.directory,
        )

    def close(self) -> None:
        """SIGTERM: every open file closes into the spool, the spool empties into the store while it can."""
        if self.writer.close(CLOSE_TIMEOUT_S):
            self.uploader.close(FLUSH_TIMEOUT_S)
        self.spool.close()

    # -- the recorder, on the event loop -------------------------------------------------------

    def record(self, outcome) -> None:
        if outcome.predictions is None:
            return
        self.writer.submit_predictions(
            request_id=outcome.request_id,
            model_name=outcome.model or self.model_name,
            model_version=outcome.version,
            names=outcome.facts.names,
            rows=outcome.rows,
            predictions=outcome.predictions,
            latency_ms=outcome.latency_s * 1000,
        )

    def _dropped(self, kind: str, reason: str, rows: int) -> None:
        self.dropped_rows[reason] += rows

    def _stored(self, kind: str, rows: int) -> None:
        self.stored_rows[kind] += rows

    # -- what it shows -------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``ok``; ``spool_stalled`` or ``spool_failing`` (the local disk); ``store_stalled`` or ``store_failing``."""
        if self.writer.stalled:
            return "spool_stalled"
        if self.writer.failing:
            return "spool_failing"
        if self.uploader.state != "ok":
            return f"store_{self.uploader.state}"
        return "ok"

    def health(self) -> dict:
        return {
            "location": self.location,
            "replica": self.replica,
            "state": self.state,
            "buffered_rows": self.writer.buffered_rows,
            "max_buffered_rows": self.writer.max_buffered_rows,
            "spool": {
                "directory": str(self.spool.directory),
                "files": self.spool.ready_files,
                "bytes": self.spool.bytes,
                "max_bytes": self.spool.max_bytes,
            },
            "store": {
                "state": self.uploader.state,
                "stored_files": self.uploader.stored_files,
                "last_error": self.uploader.last_error,
            },
        }

    def describe(self):
        return []

    def collect(self):
        stored = CounterMetricFamily(
            f"{PREFIX}_capture_stored_rows", "Rows the capture's store took, by kind.", labels=["kind"]
        )
        for kind, rows in list(self.stored_rows.items()):
            stored.add_metric([kind], rows)
        yield stored
        yield CounterMetricFamily(
            f"{PREFIX}_capture_stored_files", "Files the capture's store took.", value=self.uploader.stored_files
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_capture_dropped_rows",
            "Answered rows not captured: past the buffer (queue_full), the spool full (spool_full), a failed write.",
            labels=["reason"],
        )
        for reason, rows in list(self.dropped_rows.items()):
            dropped.add_metric([reason], rows)
        yield dropped
        yield GaugeMetricFamily(
            f"{PREFIX}_capture_buffered_rows",
            f"Rows queued or in open files (at most {self.writer.max_buffered_rows}; past it rows are dropped).",
            value=self.writer.buffered_rows,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_capture_spool_files",
            "Closed files waiting in the spool for the store.",
            value=self.spool.ready_files,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_capture_spool_bytes",
            f"Bytes in the spool: files waiting and labels' journals (at most {self.spool.max_bytes}).",
            value=self.spool.bytes,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_capture_upload_failures", "Uploads to the store that failed.", value=self.uploader.failures
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_capture_store_up",
            "1 while uploads to the capture's store succeed (or none was needed yet), 0 while they fail or hang.",
            value=1 if self.uploader.state == "ok" else 0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_capture_stalled",
            "1 while a write of the capture's spool has not returned for a while (a disk that stopped), else 0.",
            value=1 if self.writer.stalled else 0,
        )


def buffer_rows(config) -> int:
    """What the capture holds in memory at most, in rows: two files' worth, and always two requests at the row limit
    (a request, or a ``POST /feedback``, larger than the buffer could never be taken)."""
    return 2 * max(config.capture_file_rows, config.max_rows)


class CapturedLabels:
    """What ``serving.feedback.service`` writes accepted labels to when the capture keeps them.

    Labels are acknowledged only once durable: ``done(True)`` comes after their lines are
    synced to the journal of the open feedback file in the spool (``serving.capture.writer``).
    """

    kind = "capture's label journal"

    def __init__(self, capture: Capture):
        self._capture = capture
        self._writer = capture.writer

    def submit(self, labels, done=None) -> bool:
        """``(request_id, row, class name, version or None, model or None)`` labels; False when the buffer is full.

        A label goes under the model whose answer it names; one whose answer the proxy no
        longer remembers, under the first model served (the steps join it by request id).
        """
        return self._writer.submit_labels(self._capture.model_name, labels, done)

    @property
    def failing(self) -> bool:
        return self._writer.failing

    @property
    def stalled(self) -> bool:
        return self._writer.stalled

    def health(self) -> dict:
        return {"capture": self._capture.location, "state": self._capture.state}


def install(app, proxy, config, registry) -> Capture:
    """Plug the capture into the app (the spool is taken now, before the proxy listens)."""
    capture = Capture(config, proxy.default.name)  # the first model: labels of a forgotten answer go there
    capture.open()
    registry.register(capture)
    proxy.recorders.append(capture.record)
    proxy.capture = capture

    async def start(_app) -> None:
        capture.start()

    async def close(_app) -> None:
        """After in-flight requests are answered, so their rows are captured too."""
        await asyncio.to_thread(capture.close)

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    return capture
