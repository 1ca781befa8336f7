"""``GET /metrics`` and the prediction log of a real ``python -m serving`` in front of a real upstream."""

import json
import os
import socket
from urllib.parse import urlsplit

import pytest
import requests

from iris_core.records import read_log
from tests.helpers.iris import FEATURES
from tests.helpers.metrics_scrape import sample, scrape
from tests.helpers.proxies import running_proxy, shared_upstream_proxy
from tests.helpers.support import free_port, wait_until

pytestmark = pytest.mark.slow

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]


def invocations(proxy, rows, **kwargs) -> requests.Response:
    return proxy.post("/invocations", json={"dataframe_split": {"columns": list(FEATURES), "data": rows}}, **kwargs)


@pytest.fixture(scope="module")
def logged_proxy(trained_registry, upstream_url, tmp_path_factory):
    """A proxy with a token, a small row limit and the prediction log on, in front of the shared upstream."""
    workdir = tmp_path_factory.mktemp("logged-proxy")
    log = workdir / "predictions.jsonl"
    with shared_upstream_proxy(
        trained_registry, workdir, upstream_url, "--max-rows", "5", "--prediction-log", str(log), token="s3cret-token"
    ) as proxy:
        proxy.prediction_log = log
        yield proxy


AUTH = {"Authorization": "Bearer s3cret-token"}


def test_metrics_need_no_token_and_count_requests_by_endpoint_and_code_as_they_arrive(logged_proxy):
    metrics_url = logged_proxy.url + "/metrics"
    before = scrape(metrics_url)
    assert invocations(logged_proxy, [SETOSA], headers=AUTH).status_code == 200
    assert invocations(logged_proxy, [SETOSA, VIRGINICA], headers=AUTH).status_code == 200
    assert logged_proxy.predict(headers=AUTH).status_code == 200
    assert invocations(logged_proxy, [SETOSA]).status_code == 401
    assert (
        logged_proxy.post(
            "/invocations", data=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert invocations(logged_proxy, [SETOSA] * 6, headers=AUTH).status_code == 413
    after = scrape(metrics_url)
    delta = lambda metric, **labels: sample(after, metric, **labels) - sample(before, metric, **labels)  # noqa: E731
    assert delta("proxy_requests_total", endpoint="/invocations", code="200") == 2
    assert delta("proxy_requests_total", endpoint="/predict", code="200") == 1
    for code in ("401", "400", "413"):
        assert delta("proxy_requests_total", endpoint="/invocations", code=code) == 1
    assert delta("proxy_request_duration_seconds_count", endpoint="/invocations") == 5
    assert delta("proxy_request_rows_sum") == 4
    assert sample(after, "proxy_requests_in_flight") == 0


def test_predictions_are_counted_by_class_with_a_confidence_per_row(logged_proxy):
    metrics_url = logged_proxy.url + "/metrics"
    before = scrape(metrics_url)
    assert invocations(logged_proxy, [SETOSA, SETOSA, VIRGINICA], headers=AUTH).status_code == 200
    after = scrape(metrics_url)
    delta = lambda metric, **labels: sample(after, metric, **labels) - sample(before, metric, **labels)  # noqa: E731
    assert delta("proxy_predictions_total", **{"class": "setosa"}) == 2
    assert delta("proxy_predictions_total", **{"class": "virginica"}) == 1
    assert delta("proxy_prediction_confidence_count") == 3
    assert 0 < delta("proxy_prediction_confidence_sum") <= 3


def test_model_info_names_the_version_served_and_process_metrics_are_there(logged_proxy):
    samples = scrape(logged_proxy.url + "/metrics")
    assert sample(samples, "proxy_model_info", model="iris", name="iris", alias="", version="2") == 1
    assert sample(samples, "process_resident_memory_bytes") > 0
    assert ("proxy_rollouts_total", (("model", "iris"), ("outcome", "failed"))) in samples


def test_each_answered_row_is_logged_with_its_request_id_version_and_prediction(logged_proxy):
    response = invocations(logged_proxy, [SETOSA, VIRGINICA], headers={**AUTH, "X-Request-Id": "monitoring-log-1"})
    assert response.status_code == 200
    invocations(logged_proxy, [SETOSA])  # refused (401): not logged
    log = logged_proxy.prediction_log

    def logged():
        return [r for r in read_log(log).records if r["request_id"] == "monitoring-log-1"] if log.exists() else []

    records = wait_until(lambda: len(logged()) == 2 and logged(), timeout=30, what="two logged rows")
    predictions = response.json()["predictions"]
    assert [r["features"] for r in records] == [dict(zip(FEATURES, SETOSA)), dict(zip(FEATURES, VIRGINICA))]
    assert [r["prediction"] for r in records] == [p["prediction"] for p in predictions] == ["setosa", "virginica"]
    assert [r["confidence"] for r in records] == [p["confidence"] for p in predictions]
    assert {(r["model_name"], r["model_version"]) for r in records} == {("iris", "2")}
    assert all(r["latency_ms"] > 0 and r["ts"].endswith("Z") for r in records)
    written = sample(scrape(logged_proxy.url + "/metrics"), "proxy_prediction_log_written_rows_total")
    assert written == len(read_log(log).records)


def test_in_flight_counts_a_request_whose_body_is_still_arriving(logged_proxy):
    address = urlsplit(logged_proxy.url)
    body = json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [SETOSA]}}).encode()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as client:
        client.sendall(head.encode() + body[:10])
        wait_until(
            lambda: sample(scrape(logged_proxy.url + "/metrics"), "proxy_requests_in_flight") == 1,
            timeout=30,
            what="one request in flight",
        )
        client.sendall(body[10:])
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
    assert sample(scrape(logged_proxy.url + "/metrics"), "proxy_requests_in_flight") == 0


def test_the_prediction_log_rotates_by_size_and_keeps_log_backups_files(trained_registry, upstream_url, tmp_path):
    log = tmp_path / "predictions.jsonl"
    with running_proxy(
        trained_registry,
        tmp_path,
        "--upstream",
        upstream_url,
        "--prediction-log",
        str(log),
        "--log-max-bytes",
        "2000",
        "--log-backups",
        "2",
    ) as proxy:
        for _ in range(40):
            assert proxy.predict().status_code == 200
        wait_until(
            lambda: sample(scrape(proxy.url + "/metrics"), "proxy_prediction_log_written_rows_total") == 40,
            timeout=30,
            what="40 rows written",
        )
    assert sorted(p.name for p in tmp_path.glob("predictions.jsonl*")) == [
        "predictions.jsonl",
        "predictions.jsonl.1",
        "predictions.jsonl.2",
    ]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.glob("predictions.jsonl*"))


def test_a_log_path_that_cannot_be_written_fails_no_request_and_counts_the_dropped_rows(
    trained_registry, upstream_url, tmp_path
):
    unwritable = tmp_path / "a-directory"
    unwritable.mkdir()
    with running_proxy(
        trained_registry, tmp_path, "--upstream", upstream_url, "--prediction-log", str(unwritable)
    ) as proxy:
        for _ in range(5):
            assert invocations(proxy, [SETOSA, VIRGINICA]).status_code == 200
        wait_until(
            lambda: (
                sample(scrape(proxy.url + "/metrics"), "proxy_prediction_log_dropped_rows_total", reason="write_error")
                == 10
            ),
            timeout=30,
            what="10 dropped rows counted",
        )
        assert proxy.health()["status"] == "healthy"


def test_a_prediction_log_whose_writes_block_is_stalled_in_health_drops_counted_rows_and_holds_memory_flat(
    trained_registry, upstream_url, tmp_path
):
    """The log is a pipe whose reader never reads: its writes block without failing, as on a disk that stopped."""
    log = tmp_path / "predictions.jsonl"
    os.mkfifo(log)
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    big = {"dataframe_split": {"columns": list(FEATURES), "data": [SETOSA, VIRGINICA] * 5000}}  # the row limit
    try:
        with (
            running_proxy(
                trained_registry, tmp_path, "--upstream", upstream_url, "--prediction-log", str(log)
            ) as proxy,
            requests.Session() as session,
        ):
            for sent in range(1, 31):
                assert session.post(proxy.url + "/invocations", json=big, timeout=60).status_code == 200
                if sent == 5:  # the queue is full by now: whatever it holds is held from here on
                    rss_full, _ = proxy.memory()
            rss_after, _ = proxy.memory()
            wait_until(lambda: proxy.health()["prediction_log"]["state"] == "stalled", 30, what="the stall shown")
            health, samples = proxy.health()["prediction_log"], scrape(proxy.url + "/metrics")
            dropped = sample(samples, "proxy_prediction_log_dropped_rows_total", reason="queue_full")
            written = sample(samples, "proxy_prediction_log_written_rows_total")
            queued = sample(samples, "proxy_prediction_log_queued_rows")
            assert sample(samples, "proxy_prediction_log_stalled") == 1 and proxy.health()["status"] == "healthy"
            assert queued == health["queued_rows"] <= health["max_queued_rows"] and dropped >= 200_000
            assert written + dropped + queued == 300_000
            assert rss_after - rss_full < 40 * 1024 * 1024, f"{(rss_after - rss_full) >> 20} MB more for 25 requests"
            os.close(reader)  # the blocked write fails (a broken pipe) and the proxy can stop
            reader = None
    finally:
        if reader is not None:
            os.close(reader)


def test_sample_rate_zero_logs_no_row(trained_registry, upstream_url, tmp_path):
    log = tmp_path / "predictions.jsonl"
    with running_proxy(
        trained_registry, tmp_path, "--upstream", upstream_url, "--prediction-log", str(log), "--log-sample-rate", "0"
    ) as proxy:
        for _ in range(5):
            assert proxy.predict().status_code == 200
    assert not log.exists() or read_log(log).records == []


def test_without_prediction_log_nothing_is_written(trained_registry, upstream_url, tmp_path):
    with running_proxy(trained_registry, tmp_path, "--upstream", upstream_url) as proxy:
        assert proxy.predict().status_code == 200
        assert sample(scrape(proxy.url + "/metrics"), "proxy_prediction_log_written_rows_total") == 0
    assert not list(tmp_path.rglob("*.jsonl*"))


def test_metrics_port_serves_metrics_on_its_own_listener_only(trained_registry, upstream_url, tmp_path):
    port = free_port()
    with running_proxy(trained_registry, tmp_path, "--upstream", upstream_url, "--metrics-port", str(port)) as proxy:
        assert proxy.predict().status_code == 200
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert sample(samples, "proxy_requests_total", model="iris", endpoint="/predict", code="200") == 1
        assert proxy.get("/metrics").status_code == 404
        assert requests.get(f"http://127.0.0.1:{port}/predict", timeout=30).status_code == 404


def test_a_dead_upstream_counts_as_upstream_errors_with_code_503(trained_registry, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with running_proxy(trained_registry, tmp_path, "--upstream", dead, wait_healthy=False) as orphan:
        for _ in range(3):
            assert orphan.predict().status_code == 503
        assert sample(scrape(orphan.url + "/metrics"), "proxy_upstream_errors_total", code="503") == 3
