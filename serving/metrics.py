"""Prometheus metrics of the serving proxy, in a registry of its own, exposed at ``GET /metrics``.

Each proxy instance owns a ``CollectorRegistry``, so several apps (and tests) in one
process never share or collide on a metric. The exposition format is prometheus_client's.

Metrics that move on every request (requests, latency, in-flight, rows, predictions by
class, confidence) are plain integers and lists updated from the proxy's event loop and
read by a custom collector at scrape time: no lock and no label lookup on the hot path.
Rare events (upstream errors and restarts, rollouts, the prediction log's written and
dropped rows, the model served) use prometheus_client's own thread-safe metrics, since
some of them come from other threads.

All names start with ``proxy_``:

- ``proxy_requests_total{endpoint,code}``, ``proxy_request_duration_seconds{endpoint}``,
  ``proxy_requests_in_flight``;
- ``proxy_request_rows`` (rows per scoring request), ``proxy_upstream_batch_rows`` (rows
  per upstream call, after micro-batching);
- ``proxy_predictions_total{class}``, ``proxy_prediction_confidence``;
- ``proxy_upstream_errors_total{reason}``, ``proxy_upstream_restarts_total``,
  ``proxy_rollouts_total{outcome}`` (done, failed), ``proxy_model_info{name,alias,version}``;
- ``proxy_prediction_log_written_rows_total``, ``proxy_prediction_log_dropped_rows_total{reason}``;
- ``process_*`` (CPU, memory, open files of the proxy process).
"""

from bisect import bisect_left
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from serving.prediction_log import DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
PREFIX = "proxy"


class _Histogram:
    """Bucket counts as plain integers; only the event loop's thread may call ``observe``."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds):
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, as Prometheus wants them."""
        cumulative, pairs = 0, []
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts)):
            cumulative += count
            pairs.append((floatToGoString(bound), cumulative))
        return pairs


class ProxyMetrics:
    """The proxy's metrics; the hot-path methods must be called from the event loop's thread."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.in_flight = 0
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._request_rows = _Histogram(ROWS_BUCKETS)
        self._upstream_batch_rows = _Histogram(ROWS_BUCKETS)
        self._predictions: dict[str, int] = defaultdict(int)
        self._confidence = _Histogram(CONFIDENCE_BUCKETS)
        self.registry.register(_HotPathCollector(self))
        ProcessCollector(registry=self.registry)
        self._upstream_errors = Counter(f"{PREFIX}_upstream_errors", "Upstream calls that failed, by reason.", ["reason"], registry=self.registry)
        self._upstream_restarts = Counter(f"{PREFIX}_upstream_restarts", "Times the proxy restarted its model server.", registry=self.registry)
        self._rollouts = Counter(f"{PREFIX}_rollouts", "Switches to a new model version, by outcome (done, failed).", ["outcome"], registry=self.registry)
        self._model_info = Gauge(f"{PREFIX}_model_info", "The model version being served (value 1).", ["name", "alias", "version"], registry=self.registry)
        self._log_written = Counter(f"{PREFIX}_prediction_log_written_rows", "Rows appended to the prediction log.", registry=self.registry)
        self._log_dropped = Counter(f"{PREFIX}_prediction_log_dropped_rows", "Rows the prediction log dropped (queue_full, write_error).", ["reason"], registry=self.registry)
        # Series that exist from the start, so that rate() and alerts see a 0 before the first event.
        for outcome in ("done", "failed"):
            self._rollouts.labels(outcome)
        for reason in (DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR):
            self._log_dropped.labels(reason)

    # Hot path: the event loop's thread only.

    def request_started(self) -> None:
        self.in_flight += 1

    def request_finished(self, endpoint: str, code: int, seconds: float) -> None:
        """One answered request; ``endpoint`` must come from a fixed set (the route, not the raw path)."""
        self.in_flight -= 1
        self._requests[(endpoint, str(code))] += 1
        histogram = self._latency.get(endpoint)
        if histogram is None:
            histogram = self._latency[endpoint] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def observe_predictions(self, predictions: list[dict]) -> None:
        """The rows of one scored request: their count, classes and confidences."""
        self._request_rows.observe(len(predictions))
        classes, confidence = self._predictions, self._confidence
        for record in predictions:
            classes[str(record.get("prediction"))] += 1
            value = record.get("confidence")
            if value is not None:
                confidence.observe(value)

    def observe_upstream_batch(self, rows: int) -> None:
        self._upstream_batch_rows.observe(rows)

    # Rare events: any thread.

    def upstream_error(self, reason: str) -> None:
        self._upstream_errors.labels(reason).inc()

    def upstream_restarted(self) -> None:
        self._upstream_restarts.inc()

    def rollout(self, outcome: str) -> None:
        """``outcome`` is ``done`` or ``failed``."""
        self._rollouts.labels(outcome).inc()

    def set_model(self, name: str, alias: str | None, version: str) -> None:
        """The version now served; the previous ``model_info`` series disappears."""
        self._model_info.clear()
        self._model_info.labels(name, alias or "", str(version)).set(1)

    def log_written(self, rows: int) -> None:
        self._log_written.inc(rows)

    def log_dropped(self, reason: str, rows: int) -> None:
        self._log_dropped.labels(reason).inc(rows)

    def aiohttp_handler(self):
        """The ``GET /metrics`` handler: prometheus_client's, with content negotiation (text or OpenMetrics)."""
        from prometheus_client.aiohttp import make_aiohttp_handler

        return make_aiohttp_handler(self.registry, disable_compression=True)


class _HotPathCollector:
    """Turns ProxyMetrics' integers into metric families when Prometheus scrapes."""

    def __init__(self, metrics: ProxyMetrics):
        self._metrics = metrics

    def describe(self):
        return []

    def collect(self):
        m = self._metrics
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Requests answered, by endpoint and status code.", labels=["endpoint", "code"])
        for (endpoint, code), count in list(m._requests.items()):
            requests.add_metric([endpoint, code], count)
        yield requests
        latency = HistogramMetricFamily(f"{PREFIX}_request_duration_seconds", "Time to answer a request, by endpoint.", labels=["endpoint"])
        for endpoint, histogram in list(m._latency.items()):
            latency.add_metric([endpoint], histogram.buckets(), histogram.total)
        yield latency
        yield GaugeMetricFamily(f"{PREFIX}_requests_in_flight", "Requests being answered now.", value=m.in_flight)
        yield _histogram_family(f"{PREFIX}_request_rows", "Rows per scoring request.", m._request_rows)
        yield _histogram_family(f"{PREFIX}_upstream_batch_rows", "Rows per upstream /invocations call (after micro-batching).", m._upstream_batch_rows)
        predictions = CounterMetricFamily(f"{PREFIX}_predictions", "Scored rows, by predicted class.", labels=["class"])
        for name, count in list(m._predictions.items()):
            predictions.add_metric([name], count)
        yield predictions
        yield _histogram_family(f"{PREFIX}_prediction_confidence", "Probability of the predicted class, per scored row.", m._confidence)


def _histogram_family(name: str, documentation: str, histogram: _Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=histogram.buckets(), sum_value=histogram.total)
