"""The proxy's endpoints, formats and refusals, through `python -m serving` in front of a real upstream."""

import csv
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.error_bodies import ERROR_KEYS, LEAKS, assert_error
from tests.helpers.iris import CLASSES, FEATURES
from tests.helpers.json_documents import any_json
from tests.helpers.proxies import ROW, running_proxy, start_proxy
from tests.helpers.support import free_port, http_ok, stop_process, wait_until

pytestmark = pytest.mark.slow

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 2.6, 6.9, 2.3]]
RECORDS = [dict(zip(FEATURES, row)) for row in ROWS]
SPLIT = {"dataframe_split": {"columns": list(FEATURES), "data": ROWS}}
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_clean(response: requests.Response, sent: bytes) -> None:
    """No 5xx, a JSON body, no stack trace or path, and nothing long of the request echoed back."""
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code != 200:
        assert set(body) == ERROR_KEYS
    assert not any(leak in response.text for leak in LEAKS)
    if len(sent) >= 16:
        assert sent not in response.content


# -- endpoints ---------------------------------------------------------------------------------


def test_invocations_answers_predictions_with_model_version_and_request_id(proxy):
    response = proxy.post("/invocations", json=SPLIT)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["prediction"] for p in predictions] == ["setosa", "versicolor", "virginica"]
    assert set(predictions[0]) == {"prediction", "prediction_index", "confidence", "confidence_scores"}
    assert set(predictions[0]["confidence_scores"]) == set(CLASSES)
    assert response.headers["X-Model-Version"] == "2"
    assert len(response.headers["X-Request-Id"]) >= 8


def test_every_protocol_format_and_csv_give_identical_predictions(proxy):
    reordered = list(reversed(FEATURES))
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(reordered)
    writer.writerows([record[name] for name in reordered] for record in RECORDS)
    answers = [
        proxy.post("/invocations", json=SPLIT),
        proxy.post("/invocations", json={"dataframe_split": {"columns": reordered, "data": [r[::-1] for r in ROWS]}}),
        proxy.post("/invocations", json={"dataframe_records": RECORDS}),
        proxy.post("/invocations", json={"instances": RECORDS}),
        proxy.post("/invocations", json={"inputs": {name: [r[name] for r in RECORDS] for name in FEATURES}}),
        proxy.post("/invocations", data=table.getvalue().encode(), headers={"Content-Type": "text/csv"}),
    ]
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert all(a.json() == answers[0].json() for a in answers)


def test_predict_answers_the_classic_request_with_one_object(proxy):
    response = proxy.predict()
    assert response.status_code == 200
    body = response.json()
    assert body["prediction"] == "setosa" and body["prediction_index"] == 0
    assert response.json() == proxy.post("/invocations", json={"dataframe_records": [ROW]}).json()["predictions"][0]
    assert response.headers["X-Model-Version"] == "2" and response.headers["X-Request-Id"]


def test_a_client_request_id_is_kept_and_an_unsafe_one_replaced(proxy):
    assert proxy.predict(headers={"X-Request-Id": "order-42.a"}).headers["X-Request-Id"] == "order-42.a"
    replaced = proxy.predict(headers={"X-Request-Id": "bad id <script>"}).headers["X-Request-Id"]
    assert replaced != "bad id <script>" and replaced.isalnum()


def test_health_reports_healthy_with_the_model_version(proxy):
    response = proxy.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["model"]["name"] == "iris" and body["model"]["version"] == "2" and body["model"]["run_id"]
    assert body["uptime_s"] >= 0


def test_ready_answers_200_when_the_upstream_scores_the_canary_row(proxy):
    response = proxy.get("/ready")
    assert response.status_code == 200 and response.json() == {"status": "ready", "version": "2"}


def test_ping_answers_200_and_version_answers_mlflows_version_as_mlflow_does(proxy):
    import importlib.metadata

    assert proxy.get("/ping").status_code == 200
    version = proxy.get("/version")
    assert version.status_code == 200 and version.headers["Content-Type"] == "application/json"
    assert version.text == importlib.metadata.version("mlflow")


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/metrics-not-here", "/invocations/../docs"])
def test_the_upstreams_docs_and_unknown_paths_are_not_reachable(proxy, path):
    assert_error(proxy.get(path), 404, "NOT_FOUND")


def test_a_wrong_method_gets_405_naming_the_allowed_one(proxy):
    response = proxy.get("/invocations")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["Allow"] == "POST"


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "error_code"),
    [
        (json.dumps(SPLIT), {}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (json.dumps(SPLIT), {"Content-Type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ('{"dataframe_split": ', {"Content-Type": "application/json"}, 400, "MALFORMED_REQUEST"),
        ("[" * 100_000, {"Content-Type": "application/json"}, 400, "MALFORMED_REQUEST"),
        (
            '{"dataframe_records": [{"sepal_length": NaN, "sepal_width": 1, "petal_length": 1, "petal_width": 1}]}',
            {"Content-Type": "application/json"},
            400,
            "INVALID_VALUE",
        ),
        ('{"rows": []}', {"Content-Type": "application/json"}, 400, "INVALID_FORMAT"),
        ('{"dataframe_records": [{"sepal_length": 1}]}', {"Content-Type": "application/json"}, 400, "INVALID_COLUMNS"),
        (
            json.dumps({"dataframe_records": [{**RECORDS[0], "petal_width": "0.2"}]}),
            {"Content-Type": "application/json"},
            400,
            "INVALID_VALUE",
        ),
        (
            json.dumps({"dataframe_records": [{**RECORDS[0], "petal_width": -1}]}),
            {"Content-Type": "application/json"},
            400,
            "INVALID_VALUE",
        ),
        ("a,b\n1,2\n", {"Content-Type": "text/csv"}, 400, "INVALID_COLUMNS"),
        (json.dumps({"dataframe_records": RECORDS * 3334}), {"Content-Type": "application/json"}, 413, "TOO_MANY_ROWS"),
        (b"x" * (1024 * 1024 + 1), {"Content-Type": "application/json"}, 413, "REQUEST_TOO_LARGE"),
    ],
    ids=[
        "no-content-type",
        "text-plain",
        "truncated-json",
        "deep-nesting",
        "nan",
        "no-protocol-key",
        "missing-columns",
        "string-value",
        "negative-value",
        "csv-wrong-header",
        "too-many-rows",
        "body-too-large",
    ],
)
def test_each_bad_request_gets_its_status_and_a_short_json_error(proxy, body, headers, status, error_code):
    data = body if isinstance(body, bytes) else body.encode()
    response = proxy.post("/invocations", data=data, headers=headers)
    error = assert_error(response, status, error_code)
    assert len(response.content) < 2000 and len(error["details"]) <= 10
    assert response.headers["X-Model-Version"] == "2" and response.headers["X-Request-Id"]


def test_predict_names_the_bad_field(proxy):
    error = assert_error(proxy.predict({**ROW, "petal_width": None}), 400, "INVALID_VALUE")
    assert error["details"] == ["petal_width: must be a number, got null"]


def test_an_oversized_body_is_refused_from_its_content_length_before_it_is_read(proxy):
    address = urlsplit(proxy.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.putrequest("POST", "/invocations")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(100 * 1024 * 1024))
    connection.endheaders(b'{"dataframe_split": ')  # the other 100 MB never come
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error_code"] == "REQUEST_TOO_LARGE"
    connection.close()


def test_a_chunked_body_over_the_limit_is_refused_with_413(proxy):
    chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MiB with no Content-Length
    response = proxy.post("/invocations", data=chunks, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "REQUEST_TOO_LARGE")


@pytest.mark.parametrize("bad_headers", [{}, {"Content-Type": "application/json"}], ids=["no-content-type", "bad-json"])
def test_a_keep_alive_client_gets_a_4xx_then_a_200_on_the_same_connection(proxy, bad_headers):
    address = urlsplit(proxy.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("POST", "/invocations", body=b"{not json", headers=bad_headers)
    first = connection.getresponse()
    first.read()
    sock = connection.sock
    connection.request(
        "POST", "/invocations", body=json.dumps(SPLIT).encode(), headers={"Content-Type": "application/json"}
    )
    second = connection.getresponse()
    assert (first.status // 100, second.status) == (4, 200)
    assert json.loads(second.read())["predictions"][0]["prediction"] == "setosa"
    assert connection.sock is sock  # the same connection, not a silent reconnect
    connection.close()


json_values = any_json(
    ["dataframe_split", "dataframe_records", "instances", "inputs", "columns", "data", "params", *FEATURES],
    max_text=12,
    max_key=8,
    max_items=6,
    max_leaves=40,
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/csv",
        "application/json; charset=utf-8",
        "application/json; charset=utf-16",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "text/csv; header=absent",
        "application/vnd.apache.parquet",
    ]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)  # requests refuses padded header values


@PROPERTY
@given(document=json_values, endpoint=st.sampled_from(["/invocations", "/predict"]))
def test_any_json_value_gets_an_answer_without_5xx_trace_or_echo(proxy, document, endpoint):
    sent = json.dumps(document).encode()
    assert_clean(proxy.post(endpoint, data=sent, headers={"Content-Type": "application/json"}), sent)


@PROPERTY
@given(
    body=st.binary(max_size=2048), content_type=content_types, endpoint=st.sampled_from(["/invocations", "/predict"])
)
def test_any_bytes_with_any_content_type_get_an_answer_without_5xx_trace_or_echo(proxy, body, content_type, endpoint):
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert_clean(proxy.post(endpoint, data=body, headers=headers), body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=4, max_size=4), min_size=1, max_size=5)
)
def test_well_formed_rows_of_any_finite_numbers_are_scored_or_refused_never_5xx(proxy, rows):
    response = proxy.post("/invocations", json={"dataframe_split": {"columns": list(FEATURES), "data": rows}})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert len(response.json()["predictions"]) == len(rows)


# -- security and faults, each with its own proxy -------------------------------------------------


def test_a_token_is_required_on_the_scoring_endpoints_when_set(trained_registry, upstream_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SERVING_API_TOKEN", "s3cret-token")
    with running_proxy(trained_registry, tmp_path, "--upstream", upstream_url) as guarded:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            for path in ("/invocations", "/predict"):
                response = guarded.post(path, json=SPLIT if path == "/invocations" else ROW, headers=headers)
                assert_error(response, 401, "UNAUTHORIZED")
                assert response.headers["WWW-Authenticate"] == "Bearer"
        assert guarded.predict(headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert guarded.get("/health").status_code == 200  # a container health check needs no token


def test_an_upstream_that_is_not_running_gives_503_with_retry_after_and_degraded_health(trained_registry, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with running_proxy(trained_registry, tmp_path, "--upstream", dead, wait_healthy=False) as orphan:
        response = orphan.predict()
        assert_error(response, 503, "UPSTREAM_UNAVAILABLE")
        assert int(response.headers["Retry-After"]) > 0
        health = orphan.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert_error(orphan.get("/ready"), 503, "NOT_READY")


def test_an_upstream_slower_than_the_timeout_gives_504(trained_registry, upstream_url, tmp_path):
    with running_proxy(trained_registry, tmp_path, "--upstream", upstream_url, "--timeout", "0.001") as impatient:
        response = impatient.post("/invocations", json={"dataframe_records": RECORDS * 1000})
        assert_error(response, 504, "UPSTREAM_TIMEOUT")


def test_an_upstream_that_answers_with_an_error_gives_a_generic_502(trained_registry, tmp_path):
    port = free_port()
    # A real HTTP server that is not a scoring server: it answers POST /invocations with 501.
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), 60, what="http.server")
        with running_proxy(
            trained_registry, tmp_path, "--upstream", f"http://127.0.0.1:{port}", wait_healthy=False
        ) as confused:
            body = assert_error(confused.predict(), 502, "UPSTREAM_ERROR")
            assert "501" not in body["message"]
    finally:
        stop_process(other)


def test_sigterm_lets_an_in_flight_request_finish_refuses_new_ones_and_exits_0(trained_registry, upstream, tmp_path):
    draining = start_proxy(trained_registry, tmp_path, "--upstream", upstream.url, "--no-batching")
    address = urlsplit(draining.url)
    os.killpg(upstream.proc.pid, signal.SIGSTOP)  # the upstream holds the request until SIGCONT
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(draining.post, "/invocations", json=SPLIT, timeout=120)
            wait_until(lambda: _established_to(upstream.url), 30, what="the request to reach the upstream")
            os.killpg(draining.proc.pid, signal.SIGTERM)
            wait_until(lambda: not _accepts(address), 30, what="the proxy to stop accepting connections")
            assert not in_flight.done()
            os.killpg(upstream.proc.pid, signal.SIGCONT)
            response = in_flight.result(timeout=120)
        assert response.status_code == 200
        assert response.json()["predictions"][0]["prediction"] == "setosa"
        assert draining.proc.wait(timeout=60) == 0
    finally:
        os.killpg(upstream.proc.pid, signal.SIGCONT)
        stop_process(draining.proc)


def _accepts(address) -> bool:
    try:
        socket.create_connection((address.hostname, address.port), timeout=2).close()
        return True
    except OSError:
        return False


def _established_to(url: str) -> bool:
    """Some connection to the upstream's port carries unread bytes: the proxy sent it a request."""
    port = f"{urlsplit(url).port:04X}"
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if local.endswith(":" + port) and state == "01" and int(queues.split(":")[1], 16) > 0:
            return True
    return False
