"""Prometheus metrics of the serving proxy, in a registry of its own, exposed at ``GET /metrics``.

Each proxy instance owns a ``CollectorRegistry``, so several apps (and tests) in one
process never share or collide on a metric. The exposition format is prometheus_client's.

Nothing on the request path takes a lock or looks up a label: each answered request
adds to plain integers from the proxy's event loop (``observe_request``,
``observe_predictions``), and ``ProxyMetrics`` itself, registered as a collector, turns them
into metric families when Prometheus scrapes. State the proxy already keeps (requests in flight, the version
served, rollouts and restarts counted by the router, the batching forwarder's counts) is
read at scrape time. Only the prediction log's counts, which its writer thread reports,
use prometheus_client's thread-safe ``Counter``.

All names start with ``proxy_``. Everything about a model carries its ``model`` label (the
registered model's name), so one proxy serving several models is read model by model:

- ``proxy_requests_total{model,endpoint,code}``, ``proxy_request_duration_seconds{model,endpoint}``,
  ``proxy_requests_in_flight`` (scoring requests: ``/invocations`` and ``/predict``);
- ``proxy_client_disconnects_total{endpoint}``: requests whose client went away before
  their answer (not counted in ``proxy_requests_total``, so not as 5xx);
- ``proxy_connections_open``, ``proxy_connections_refused_total``: client connections, and
  those refused over ``--max-connections``;
- ``proxy_request_rows``: rows per scored request (the client's batch size);
- ``proxy_upstream_batches_total`` and ``proxy_upstream_batched_requests_total``: upstream
  calls and the requests they carried (their ratio is the micro-batching factor, 1 with
  ``--no-batching``);
- ``proxy_predictions_total{model,class}``, ``proxy_prediction_confidence{model}``;
- ``proxy_ignored_inputs_total{model,kind}``: requests that carried ``params``, other top-level
  fields or columns that are not features, which the proxy ignores as MLflow does;
- ``proxy_upstream_errors_total{model,code}``: requests answered 502, 503 or 504 because the
  model server failed, was unavailable or timed out;
- ``proxy_upstream_restarts_total{model}``, ``proxy_rollouts_total{model,outcome}`` (done, failed,
  rolled_back, stopped), ``proxy_rollout_share`` (percent of requests a canary takes now),
  ``proxy_model_info{model,name,alias,version}`` (value 1), ``proxy_canary_copies_dropped_rows_total``
  (rows of a delivered version's requests not copied to the previous version: its queue was full);
- ``proxy_registry_state{state}``: 1 for the state the last look at the registry left (``ok``,
  ``unreachable``, ``alias_missing``, ``not_used``), 0 for the others;
- ``proxy_model_monitor_status{version,tag,status}`` (value 1): the monitor's verdicts on the served
  version, as its ``drift_status`` and ``performance_status`` tags hold them, read while the proxy
  follows an alias (``serving.rollout.following``); none before the monitor has tagged it;
- with ``--shadow``: ``proxy_shadow_rows_total{live_class,shadow_class}`` (rows both scored, by
  class pair), ``proxy_shadow_errors_total`` and ``proxy_shadow_dropped_total`` (rows the
  shadowed version failed to score, or that a full queue dropped), ``proxy_shadow_agreement``
  and ``proxy_shadow_duration_seconds`` (its calls), ``proxy_shadow_info{version,against}``;
- ``proxy_prediction_log_written_rows_total``, ``proxy_prediction_log_dropped_rows_total{reason}``
  (``queue_full``: past the queue's bound in rows; ``write_error``), and the gauges
  ``proxy_prediction_log_queued_rows`` and ``proxy_prediction_log_stalled`` (1 while a write
  has not returned for ``serving.files.log_writer.STALL_AFTER_S``), only with the prediction log on;
- ``process_*``: CPU, memory and open files of the proxy process.

With ``--feedback-log``, ``serving.feedback.service`` adds its own collector to the same registry:
live accuracy per version, the labels and the answer memory (``proxy_live_*``, ``proxy_feedback_*``,
``proxy_answer_memory_*``).
"""

from bisect import bisect_left
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from iris_core.shadow_evidence import LATENCY_BOUNDS_MS
from iris_core.table.models import answer_class, answer_confidence
from serving.files.log_writer import DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR
from serving.files.queue_metrics import PREFIX, log_queue_families
from serving.protocols.rows import IGNORED_COLUMN, IGNORED_FIELD, IGNORED_PARAMS
from serving.registry.base import RegistryState
from serving.rollout.shadow import MAX_QUEUED_ROWS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
UPSTREAM_ERROR_CODES = frozenset({502, 503, 504})
MAX_CLASS_LABELS = 64  # distinct values of proxy_predictions_total's class label, beyond a contract's classes
OTHER_CLASS = "other"
IGNORED_KINDS = (IGNORED_PARAMS, IGNORED_FIELD, IGNORED_COLUMN)


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
    """The metrics of one proxy; ``proxy`` (a ``serving.app.Proxy``) is read at scrape time when given.

    The prediction log's counters exist only when ``prediction_log`` is on: a dashboard
    that sees them at 0 would read "logging, nothing dropped" for a log that is off.
    """

    def __init__(self, proxy=None, prediction_log: bool = False, models: tuple[str, ...] = ()):
        self.registry = CollectorRegistry()
        self._proxy = proxy
        self.log_writer = None  # the prediction log's writer, whose queue and stall are read at scrape time
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)  # (model, endpoint, code)
        self._latency: dict[tuple[str, str], _Histogram] = {}  # (model, endpoint)
        self._request_rows: dict[str, _Histogram] = {}
        self._predictions: dict[str, dict] = {}  # model -> predicted class -> rows
        self._confidence: dict[str, _Histogram] = {}
        self._upstream_errors: dict[tuple[str, int], int] = {}
        self._ignored: dict[tuple[str, str], int] = {}
        for model in models:  # present from the start, so rate() and alerts see a 0
            self._model(model)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        if not prediction_log:
            return
        self._log_written = Counter(
            f"{PREFIX}_prediction_log_written_rows", "Rows appended to the prediction log.", registry=self.registry
        )
        self._log_dropped = Counter(
            f"{PREFIX}_prediction_log_dropped_rows",
            "Rows the prediction log dropped, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in (DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR):
            self._log_dropped.labels(reason)  # present from the start, so rate() and alerts see a 0

    def _model(self, model: str) -> None:
        """The counters of one model, at 0."""
        if model in self._predictions:
            return
        self._request_rows[model] = _Histogram(ROWS_BUCKETS)
        self._predictions[model] = defaultdict(int)
        self._confidence[model] = _Histogram(CONFIDENCE_BUCKETS)
        for code in sorted(UPSTREAM_ERROR_CODES):
            self._upstream_errors[(model, code)] = 0
        for kind in IGNORED_KINDS:
            self._ignored[(model, kind)] = 0

    def observe_request(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        """One answered request (event loop only); ``endpoint`` must come from a fixed set, never the raw path,
        and ``model`` be a served model's name."""
        self._requests[(model, endpoint, code)] += 1
        histogram = self._latency.get((model, endpoint))
        if histogram is None:
            histogram = self._latency[(model, endpoint)] = _Histogram(LATENCY_BUCKETS)
            self._model(model)
        histogram.observe(seconds)
        if code in UPSTREAM_ERROR_CODES:
            self._upstream_errors[(model, code)] += 1

    def observe_ignored(self, model: str, kinds) -> None:
        """What one request carried that the model does not use (``serving.protocols.scoring.IGNORED_*``)."""
        for kind in kinds:
            self._ignored[(model, kind)] += 1

    def observe_predictions(self, model: str, predictions: list, facts=None) -> None:
        """The model's answers for one request's rows (event loop only): count, classes, confidences.

        A class label is kept only for a class of the version's contract, or, for a version
        that lists none, for the first ``MAX_CLASS_LABELS`` classes seen; the rest count as
        ``other``, so a model that answers anything cannot grow the metrics without bound.
        """
        self._model(model)
        self._request_rows[model].observe(len(predictions))
        classes, confidence = self._predictions[model], self._confidence[model]
        known = facts.contract.classes if facts is not None else ()
        for answer in predictions:
            name = answer_class(answer)
            if name not in classes and (name not in known if known else len(classes) >= MAX_CLASS_LABELS):
                name = OTHER_CLASS
            classes[name] += 1
            value = answer_confidence(answer)
            if value is not None:
                confidence.observe(value)

    def log_written(self, rows: int) -> None:
        self._log_written.inc(rows)

    def log_dropped(self, reason: str, rows: int) -> None:
        self._log_dropped.labels(reason).inc(rows)

    def aiohttp_handler(self):
        """The ``GET /metrics`` handler: prometheus_client's, with content negotiation (text or OpenMetrics)."""
        from prometheus_client.aiohttp import make_aiohttp_handler

        return make_aiohttp_handler(self.registry, disable_compression=True)

    # -- the collector: called by prometheus_client at scrape time ---------------------------

    def describe(self):
        return []

    def collect(self):
        """The metric families, built from the integers above and the proxy's own public state."""
        yield _counter(
            f"{PREFIX}_requests",
            "Scoring requests answered, by model, endpoint and status code.",
            ["model", "endpoint", "code"],
            self._requests,
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_request_duration_seconds",
            "Time to answer a scoring request, by model and endpoint.",
            labels=["model", "endpoint"],
        )
        for (model, endpoint), histogram in list(self._latency.items()):
            latency.add_metric([model, endpoint], histogram.buckets(), histogram.total)
        yield latency
        yield _histograms(f"{PREFIX}_request_rows", "Rows per scored request.", self._request_rows)
        yield _counter(
            f"{PREFIX}_predictions",
            "Scored rows, by model and predicted class.",
            ["model", "class"],
            {
                (model, name): n
                for model, classes in list(self._predictions.items())
                for name, n in list(classes.items())
            },
        )
        yield _histograms(
            f"{PREFIX}_prediction_confidence", "Probability of the predicted class, per scored row.", self._confidence
        )
        yield _counter(
            f"{PREFIX}_upstream_errors",
            "Requests failed by the model server (502), its absence (503) or its timeout (504).",
            ["model", "code"],
            self._upstream_errors,
        )
        yield _counter(
            f"{PREFIX}_ignored_inputs",
            "Scoring requests that carried what the model does not use, ignored as MLflow ignores it:"
            " params, other top-level fields, columns that are not features.",
            ["model", "kind"],
            self._ignored,
        )
        writer = self.log_writer
        if writer is not None:
            yield from log_queue_families("prediction_log", "prediction log", writer)
        proxy = self._proxy
        if proxy is None:
            return
        yield GaugeMetricFamily(
            f"{PREFIX}_requests_in_flight", "Scoring requests being answered now.", value=proxy.in_flight
        )
        yield _counter(
            f"{PREFIX}_client_disconnects",
            "Requests whose client went away before their answer (not counted as requests).",
            ["endpoint"],
            {(endpoint,): n for endpoint, n in proxy.client_disconnects.items()},
        )
        connections = proxy.connections
        yield GaugeMetricFamily(f"{PREFIX}_connections_open", "Client connections open now.", value=connections.open)
        yield CounterMetricFamily(
            f"{PREFIX}_connections_refused",
            "Client connections refused (503) over --max-connections.",
            value=connections.refused,
        )
        yield from _model_families(list(proxy.services.values()))


def _model_families(services: list):
    """What each model's router and forwarder keep, read now, labelled with the model."""
    restarts = CounterMetricFamily(
        f"{PREFIX}_upstream_restarts", "Times a model server that died was started again.", labels=["model"]
    )
    rollouts = CounterMetricFamily(
        f"{PREFIX}_rollouts",
        "Switches of the served version (done), versions that failed to start (failed), deliveries rolled back "
        "by the canary analysis (rolled_back) or stopped by an alias move (stopped).",
        labels=["model", "outcome"],
    )
    dropped = CounterMetricFamily(
        f"{PREFIX}_canary_copies_dropped_rows",
        "Rows of a delivered version's requests not copied to the previous version for comparison: "
        f"its queue ({MAX_QUEUED_ROWS} rows) was full.",
        labels=["model"],
    )
    share = GaugeMetricFamily(
        f"{PREFIX}_rollout_share",
        "Percent of scoring requests the version being delivered takes now (0 outside a canary step).",
        labels=["model"],
    )
    info = GaugeMetricFamily(
        f"{PREFIX}_model_info",
        "The model version served now (value 1).",
        labels=["model", "name", "alias", "version"],
    )
    batches = CounterMetricFamily(
        f"{PREFIX}_upstream_batches", "Upstream /invocations calls for scoring requests.", labels=["model"]
    )
    batched = CounterMetricFamily(
        f"{PREFIX}_upstream_batched_requests", "Requests those calls carried.", labels=["model"]
    )
    for service in services:
        router, model = service.router, [service.name]
        events = router.events
        restarts.add_metric(model, events.restarts)
        for outcome, count in (
            ("done", events.rollouts_done),
            ("failed", events.rollouts_failed),
            ("rolled_back", events.rollouts_rolled_back),
            ("stopped", events.rollouts_stopped),
        ):
            rollouts.add_metric([*model, outcome], count)
        dropped.add_metric(model, events.compare_dropped_rows)
        share.add_metric(model, router.share if router.canary is not None else 0)
        live = router.live
        if live is not None:
            info.add_metric([*model, router.model.name or "", router.model.alias or "", str(live.version)], 1)
        if service.forwarder is not None:
            batches.add_metric(model, service.forwarder.batches_sent)
            batched.add_metric(model, service.forwarder.requests_sent)
    yield from (restarts, rollouts, dropped, share, info, batches, batched)
    yield from _shadow_families(services)
    yield from _registry_families(services)


def _shadow_families(services: list):
    """Each model's shadowed version's copies, compared with its live version's answers (current pair only)."""
    pairs = CounterMetricFamily(
        f"{PREFIX}_shadow_rows",
        "Rows the shadowed version scored beside the live one, by the live and the shadowed class.",
        labels=["model", "live_class", "shadow_class"],
    )
    errors = CounterMetricFamily(
        f"{PREFIX}_shadow_errors", "Rows the shadowed version failed to score (error or timeout).", labels=["model"]
    )
    dropped = CounterMetricFamily(
        f"{PREFIX}_shadow_dropped",
        "Rows not copied to the shadowed version because its queue was full.",
        labels=["model"],
    )
    agreement = GaugeMetricFamily(
        f"{PREFIX}_shadow_agreement",
        "Share of shadowed rows where the shadowed version gave the live version's class.",
        labels=["model"],
    )
    latency = HistogramMetricFamily(
        f"{PREFIX}_shadow_duration_seconds", "Calls to the shadowed model server.", labels=["model"]
    )
    info = GaugeMetricFamily(
        f"{PREFIX}_shadow_info",
        "The version shadowed now, and the live one it is compared with.",
        labels=["model", "version", "against"],
    )
    shadowed = [service for service in services if service.router.shadowing is not None]
    for service in shadowed:
        router, model = service.router, service.name
        shadowing = router.shadowing
        live_version = router.live.version if router.live else None
        scorer, upstream = shadowing.scorer, shadowing.upstream
        counts = scorer.counts.get(live_version) if scorer is not None and live_version else None
        for pair, rows in sorted((counts.pairs if counts else {}).items()):
            live_class, _, shadow_class = pair.partition(">")
            pairs.add_metric([model, live_class, shadow_class], rows)
        errors.add_metric([model], counts.errors if counts else 0)
        dropped.add_metric([model], scorer.dropped_rows if scorer else 0)
        value = counts.agreement if counts else None
        agreement.add_metric([model], value if value is not None else float("nan"))
        if counts is not None:
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BOUNDS_MS, float("inf")), counts.latency):
                cumulative += n
                buckets.append((floatToGoString(bound / 1000), cumulative))
            latency.add_metric([model], buckets, counts.latency_sum_ms / 1000)
        if upstream is not None and live_version is not None:
            info.add_metric([model, upstream.version, live_version], 1)
    if shadowed:
        yield from (pairs, errors, dropped, agreement, latency, info)


def _registry_families(services: list):
    """What each model's router last learnt from the registry: whether it answered, and the monitor's verdicts."""
    state = GaugeMetricFamily(
        f"{PREFIX}_registry_state",
        "Where the last look at the registry left the proxy: 1 for the current state, 0 for the others.",
        labels=["model", "state"],
    )
    status = GaugeMetricFamily(
        f"{PREFIX}_model_monitor_status",
        "The monitor's verdicts on the served version, as its drift_status and performance_status tags hold them "
        "(value 1).",
        labels=["model", "version", "tag", "status"],
    )
    for service in services:
        router = service.router
        current = router.registry.get("state")
        for name in RegistryState:
            state.add_metric([service.name, name.value], 1 if name == current else 0)
        live_version = router.live.version if router.live is not None else None
        verdicts = router.verdicts
        if verdicts is not None and verdicts[0] == live_version:
            for tag, value in sorted(verdicts[1].items()):
                status.add_metric([service.name, live_version, tag, value], 1)
    yield state
    yield status


def _counter(name: str, documentation: str, labels: list[str], values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in list(values.items()):
        family.add_metric([str(label) for label in label_values], value)
    return family


def _histograms(name: str, documentation: str, histograms: dict[str, _Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["model"])
    for model, histogram in list(histograms.items()):
        family.add_metric([model], histogram.buckets(), histogram.total)
    return family
