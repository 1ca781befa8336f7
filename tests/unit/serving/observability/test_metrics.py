"""ProxyMetrics on its own: what it exposes, parsed back with prometheus_client's own parser."""

import pytest

from serving.observability.metrics import ProxyMetrics
from tests.helpers.metrics_scrape import samples


def value(metrics: ProxyMetrics, name: str, **labels) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_two_proxy_metrics_never_share_a_registry_or_a_count():
    first, second = ProxyMetrics(), ProxyMetrics()
    first.observe_request("iris", "/invocations", 200, 0.01)
    assert value(first, "proxy_requests_total", model="iris", endpoint="/invocations", code="200") == 1
    assert value(second, "proxy_requests_total", model="iris", endpoint="/invocations", code="200") is None


def test_requests_are_counted_by_model_endpoint_and_status_code():
    metrics = ProxyMetrics()
    for endpoint, code in [("/invocations", 200), ("/invocations", 200), ("/invocations", 400), ("/ping", 200)]:
        metrics.observe_request("iris", endpoint, code, 0.002)
    assert value(metrics, "proxy_requests_total", model="iris", endpoint="/invocations", code="200") == 2
    assert value(metrics, "proxy_requests_total", model="iris", endpoint="/invocations", code="400") == 1
    assert value(metrics, "proxy_requests_total", model="iris", endpoint="/ping", code="200") == 1
    assert value(metrics, "proxy_request_duration_seconds_count", model="iris", endpoint="/invocations") == 3


def test_latency_buckets_are_cumulative_and_inclusive_of_their_bound():
    metrics = ProxyMetrics()
    for seconds in (0.001, 0.003, 0.2, 100.0):
        metrics.observe_request("iris", "/invocations", 200, seconds)

    def bucket(le):
        return value(metrics, "proxy_request_duration_seconds_bucket", model="iris", endpoint="/invocations", le=le)

    assert (bucket("0.001"), bucket("0.005"), bucket("0.25"), bucket("30.0"), bucket("+Inf")) == (1, 2, 3, 3, 4)
    assert value(metrics, "proxy_request_duration_seconds_sum", model="iris", endpoint="/invocations") == pytest.approx(
        100.204
    )


def test_predictions_are_counted_by_class_with_their_confidence_and_row_count():
    metrics = ProxyMetrics()
    metrics.observe_predictions(
        "iris", [{"prediction": "setosa", "confidence": 0.98}, {"prediction": "virginica", "confidence": 0.55}]
    )
    metrics.observe_predictions("iris", [{"prediction": "setosa", "confidence": 0.91}])
    assert value(metrics, "proxy_predictions_total", model="iris", **{"class": "setosa"}) == 2
    assert value(metrics, "proxy_predictions_total", model="iris", **{"class": "virginica"}) == 1
    assert value(metrics, "proxy_prediction_confidence_bucket", model="iris", le="0.6") == 1
    assert value(metrics, "proxy_prediction_confidence_count", model="iris") == 3
    assert value(metrics, "proxy_request_rows_count", model="iris") == 2
    assert value(metrics, "proxy_request_rows_sum", model="iris") == 3


def test_answers_502_503_504_count_as_upstream_errors_by_code():
    metrics = ProxyMetrics()
    for code in (200, 400, 502, 503, 503, 504, 500):
        metrics.observe_request("iris", "/invocations", code, 0.01)
    assert [value(metrics, "proxy_upstream_errors_total", model="iris", code=c) for c in ("502", "503", "504")] == [
        1,
        2,
        1,
    ]
    assert value(metrics, "proxy_upstream_errors_total", model="iris", code="500") is None


def test_prediction_log_rows_are_counted_and_drops_start_at_zero():
    metrics = ProxyMetrics(prediction_log=True)
    assert value(metrics, "proxy_prediction_log_dropped_rows_total", reason="queue_full") == 0
    metrics.log_written(5)
    metrics.log_dropped("write_error", 2)
    assert value(metrics, "proxy_prediction_log_written_rows_total") == 5
    assert value(metrics, "proxy_prediction_log_dropped_rows_total", reason="write_error") == 2


def test_the_counters_of_every_served_model_are_there_from_the_start_and_apart():
    metrics = ProxyMetrics(models=("iris", "wine"))
    assert value(metrics, "proxy_upstream_errors_total", model="wine", code="503") == 0
    metrics.observe_request("wine", "/invocations", 503, 0.01)
    assert value(metrics, "proxy_upstream_errors_total", model="wine", code="503") == 1
    assert value(metrics, "proxy_upstream_errors_total", model="iris", code="503") == 0


def test_without_the_prediction_log_its_counters_are_not_exported():
    names = {name for name, _ in samples(ProxyMetrics())}
    assert names and not any(name.startswith("proxy_prediction_log") for name in names)
