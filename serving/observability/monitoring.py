"""Plugs the metrics, the prediction log, the capture and feedback into the proxy: recorders, ``GET /metrics``,
their life cycle.

``/metrics`` is never behind the API token: it is a route of its own (or, with
``--metrics-port``, a listener of its own), not one of the scoring handlers that check it.
The recorder runs once per scoring request, on the event loop, after the answer is
built: it adds to integers and, when the prediction log is on, queues the request's rows
for the writer thread. With ``--capture-uri``, the capture's recorder queues them for the
capture's own writer (``serving.capture``). With ``--feedback-log`` or ``--capture-uri``, a
recorder remembers each answer for the labels of ``POST /feedback``
(``serving.feedback.service``), which the feedback log or the capture keeps.
"""

import logging
import socket

from aiohttp import web

from serving.feedback.service import FeedbackService
from serving.files.log_writer import LogWriter
from serving.http.server import Connections, GuardedSite, ServerLimits
from serving.observability.metrics import ProxyMetrics
from serving.observability.prediction_log import PredictionLogWriter

_logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# With --metrics-port, the command line binds that socket before starting (a busy port is a
# one-line error) and hands it over here.
METRICS_SOCKET = web.AppKey("metrics_socket", socket.socket)


def install(app: web.Application, proxy, config) -> ProxyMetrics:
    """Add the recorder and the metrics route (call before the catch-all route is added)."""
    metrics = ProxyMetrics(proxy, prediction_log=bool(config.prediction_log), models=tuple(proxy.services))
    writer = None
    if config.prediction_log:
        writer = PredictionLogWriter(
            config.prediction_log,
            sample_rate=config.log_sample_rate,
            max_bytes=config.log_max_bytes,
            backup_count=config.log_backups,
            on_written=metrics.log_written,
            on_dropped=metrics.log_dropped,
        )
        app.on_startup.append(lambda _app: _start_writer(writer))
        app.on_cleanup.append(lambda _app: _close_writer(writer))
        metrics.log_writer = proxy.prediction_log = writer
    proxy.recorders.append(recorder(metrics, writer))
    capture = None
    if config.capture_uri:
        from serving.capture.recorder import install as install_capture

        capture = install_capture(app, proxy, config, metrics.registry)
    if config.feedback_log or capture is not None:
        routers = [service.router for service in proxy.services.values()]
        feedback = FeedbackService(
            config,
            metrics.registry,
            lambda: [router.live.facts for router in routers if router.live is not None],
            models=tuple(proxy.services),
            writer=capture.labels if capture else None,
        )
        proxy.recorders.append(feedback.remember)
        proxy.feedback = feedback
        if capture is None:  # the capture starts and stops its own writer
            app.on_startup.append(lambda _app: _start_writer(feedback.writer))
            app.on_cleanup.append(lambda _app: _close_writer(feedback.writer))
    if config.metrics_port is None:
        app.router.add_get(METRICS_PATH, metrics.aiohttp_handler())
    else:
        app.cleanup_ctx.append(_metrics_listener(metrics, app, config))
    return metrics


def recorder(metrics: ProxyMetrics, writer: PredictionLogWriter | None):
    """The per-request hook: metrics always, the prediction log for answered requests when it is on."""

    def record(outcome) -> None:
        metrics.observe_request(outcome.model, outcome.endpoint, outcome.status, outcome.latency_s)
        if outcome.ignored:
            metrics.observe_ignored(outcome.model, outcome.ignored)
        if outcome.predictions is None:
            return
        metrics.observe_predictions(outcome.model, outcome.predictions, outcome.facts)
        if writer is not None:
            writer.submit(
                request_id=outcome.request_id,
                model_name=outcome.model,
                model_version=outcome.version,
                names=outcome.facts.names,
                rows=outcome.rows,
                predictions=outcome.predictions,
                latency_ms=outcome.latency_s * 1000,
            )

    return record


async def _start_writer(writer: LogWriter) -> None:
    writer.start()
    if isinstance(writer, PredictionLogWriter):
        _logger.info("logging %s to %s", sampled(writer.sample_rate), writer.path)
    else:
        _logger.info("taking labels at POST /feedback into %s", writer.path)


def sampled(rate: float) -> str:
    """What a sample rate logs, in words: "every scored request", "10% of the scored requests"."""
    if rate >= 1:
        return "every scored request"
    if rate <= 0:
        return "no scored request (--log-sample-rate 0)"
    return f"{rate * 100:.4g}% of the scored requests"


async def _close_writer(writer: LogWriter) -> None:
    """Runs after in-flight requests are answered, so their rows are written before the proxy exits."""
    writer.close()


def _metrics_listener(metrics: ProxyMetrics, app: web.Application, config):
    """A second listener that serves only ``GET /metrics``, for a port that only Prometheus reaches.

    Its connections follow the same rules as the API's (``serving.http.server``), counted apart.
    """

    async def context(_app: web.Application):
        metrics_app = web.Application()
        metrics_app.router.add_get(METRICS_PATH, metrics.aiohttp_handler())
        runner = web.AppRunner(metrics_app, access_log=None)
        await runner.setup()
        sock = app[METRICS_SOCKET]
        await GuardedSite(runner, sock, Connections(ServerLimits.of(config))).start()
        host, port = sock.getsockname()[:2]
        _logger.info("metrics on http://%s:%d%s", host, port, METRICS_PATH)
        yield
        await runner.cleanup()

    return context
