"""What a hostile or broken client gets from `python -m serving`, over raw sockets where a client library would refuse.

Requests aiohttp cannot parse, clients that vanish mid-body, slow headers and bodies,
more connections than allowed, ``Expect: 100-continue`` with a body too large, and what
an unauthenticated client can learn. The shared default proxy (``proxy``) answers what
needs no setting; one guarded proxy for the module (a token, tight limits, the access log, credentials in
its ``--upstream`` URL) answers the rest. Neither starts a model server of its own.
"""

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers.error_bodies import ERROR_KEYS
from tests.helpers.metrics_scrape import sample, scrape
from tests.helpers.parquet_craft import Lies, crafted
from tests.helpers.proxies import ROW, running_proxy
from tests.helpers.support import wait_until

pytestmark = pytest.mark.slow

SECRET = "s3cret-bearer-token"
UPSTREAM_PASSWORD = "upstream-pa55word"
MAX_CONNECTIONS = 6
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
SERVER = "iris-serving"


@pytest.fixture(scope="module")
def guarded(trained_registry, upstream_url, tmp_path_factory):
    """A proxy with a token, small limits, the access log and a password in its --upstream URL, before the shared upstream."""
    address = urlsplit(upstream_url)
    with running_proxy(
        trained_registry,
        tmp_path_factory.mktemp("guarded"),
        "--api-token",
        SECRET,
        "--upstream",
        f"http://alice:{UPSTREAM_PASSWORD}@{address.hostname}:{address.port}",
        "--model-uri",
        "models:/iris/2",
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--body-timeout",
        str(BODY_TIMEOUT_S),
        "--access-log",
        wait_healthy=False,
    ) as proxy:
        wait_until(lambda: proxy.get("/health").status_code == 200, 60, what="the guarded proxy to be healthy")
        yield proxy


def connect(proxy) -> socket.socket:
    address = urlsplit(proxy.url)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def exchange(proxy, data: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes on a new connection and read until the proxy closes it (or ``wait`` passes)."""
    with connect(proxy) as sock:
        sock.sendall(data)
        return read_until_closed(sock, wait)


def read_until_closed(sock: socket.socket, wait: float) -> bytes:
    sock.settimeout(wait)
    received = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    return received


def parse(raw: bytes) -> tuple[int, dict, bytes]:
    """Status, headers (lower-case names) and body of the first answer in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("Content-Length", len(body)))
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body[:length]


def assert_own_error(raw: bytes, status: int, error_code: str) -> dict:
    got, headers, body = parse(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json" and headers["server"] == SERVER
    error = json.loads(body)
    assert set(error) == ERROR_KEYS and error["error_code"] == error_code
    return headers


# -- requests aiohttp cannot parse -------------------------------------------------------------

MALFORMED = {
    "bare LF line ends": b"POST /invocations HTTP/1.1\nHost: x\nAuthorization: Bearer %s\nContent-Length: 2\n\n{}",
    "two Content-Lengths": (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}"
    ),
    "a Content-Length that is not a number": (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 2x\r\n\r\n{}"
    ),
    "bad chunk framing": (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n"
    ),
    "a request line too long": b"GET /%s" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01 %s\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_aiohttp_cannot_parse_gets_the_proxys_short_json_and_nothing_of_it_is_echoed_or_logged(
    proxy, request_bytes
):
    sent = request_bytes.replace(b"%s", SECRET.encode())
    raw = exchange(proxy, sent)
    assert_own_error(raw, 400, "MALFORMED_REQUEST")
    assert SECRET.encode() not in raw and b"Traceback" not in raw
    time.sleep(0.2)  # the log line is written as the answer goes out
    log = proxy.output()
    assert SECRET not in log and "Traceback" not in log


# -- a client that goes away ---------------------------------------------------------------------


def test_a_client_that_disconnects_mid_body_is_counted_apart_not_as_a_5xx_and_logged_without_a_traceback(proxy):
    before = scrape(proxy.url + "/metrics")
    disconnects = sample(before, "proxy_client_disconnects_total", endpoint="/invocations")
    errors = sample(before, "proxy_requests_total", endpoint="/invocations", code="500")
    with connect(proxy) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"dataframe_split": '
        )
        time.sleep(0.3)  # the handler is reading the body when the client leaves
    wait_until(
        lambda: (
            sample(scrape(proxy.url + "/metrics"), "proxy_client_disconnects_total", endpoint="/invocations")
            == disconnects + 1
        ),
        10,
        what="the disconnect to be counted",
    )
    after = scrape(proxy.url + "/metrics")
    assert sample(after, "proxy_requests_total", endpoint="/invocations", code="500") == errors
    lines = [line for line in proxy.output().splitlines() if "disconnected" in line]
    assert lines and all(" INFO " in line for line in lines)
    assert "Traceback" not in proxy.output()


# -- Expect: 100-continue -------------------------------------------------------------------------


def test_expect_100_continue_with_an_oversized_content_length_gets_413_before_the_body_is_sent(proxy):
    with connect(proxy) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 104857600\r\n\r\n"
        )
        sock.settimeout(10)
        first = sock.recv(65536)  # the answer comes with no byte of the body sent
    assert_own_error(first, 413, "REQUEST_TOO_LARGE")


def test_expect_100_continue_within_the_limit_gets_100_then_its_answer(proxy):
    body = json.dumps(ROW).encode()
    with connect(proxy) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        status, _, answer = parse(read_until_closed(sock, 10))
    assert status == 200 and json.loads(answer)["prediction"] == "setosa"


# -- bodies that decode to far more than they weigh -----------------------------------------------

DECODING_BOMBS = {
    "a row group of 30 million rows in a file of 2": Lies(rows=30_000_000, file_rows=2, chunk_uncompressed=100),
    "a dictionary of 30 million entries behind 10 honest rows": Lies(
        rows=10, dictionary=30_000_000, chunk_uncompressed=100
    ),
}


@pytest.mark.parametrize("lies", DECODING_BOMBS.values(), ids=DECODING_BOMBS.keys())
def test_a_parquet_body_that_decodes_to_gigabytes_gets_its_4xx_in_well_under_a_second_with_memory_flat(proxy, lies):
    body = crafted(lies)
    assert len(body) < 64 * 1024, "a gigabyte of float64 values, in kilobytes"
    parquet = {"Content-Type": "application/vnd.apache.parquet"}
    assert proxy.post("/invocations", data=crafted(), headers=parquet).status_code == 200  # pyarrow imported
    rss_before, _ = proxy.memory()
    proxy.reset_peak_memory()
    started = time.monotonic()
    answer = proxy.post("/invocations", data=body, headers=parquet)
    seconds = time.monotonic() - started
    _, peak = proxy.memory()
    assert 400 <= answer.status_code < 500 and set(answer.json()) == ERROR_KEYS, answer.text[:300]
    assert seconds < 0.5, f"answered after {seconds:.2f} s"
    assert peak - rss_before < 20 * 1024 * 1024, f"the proxy's peak memory rose by {(peak - rss_before) >> 20} MB"
    assert proxy.get("/ping", timeout=5).status_code == 200


# -- headers -------------------------------------------------------------------------------------


def test_no_answer_names_a_library_or_its_version(proxy):
    answers = [
        proxy.get("/health"),
        proxy.predict(),
        proxy.post("/invocations", data=b"{", headers={"Content-Type": "application/json"}),
        proxy.get("/docs"),
        proxy.get("/metrics"),
        proxy.get("/ping"),
    ]
    for answer in answers:
        assert answer.headers["Server"] == SERVER, answer.url
        assert not any("aiohttp" in value or "Python" in value for value in answer.headers.values())


# -- connections and deadlines (the guarded proxy) ----------------------------------------------


def test_connections_over_the_limit_get_503_and_are_closed_while_the_open_ones_keep_being_served(guarded):
    opened = []
    try:
        for _ in range(MAX_CONNECTIONS + 2):
            sock = connect(guarded)
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(10)
            first = sock.recv(65536)
            opened.append(sock)
            if not first.startswith(b"HTTP/1.1 200"):
                break
        served, refused = opened[:-1], opened[-1]
        assert len(served) >= MAX_CONNECTIONS - 2, "a few slots may be held by the test's own health checks"
        headers = assert_own_error(first + read_until_closed(refused, 5), 503, "TOO_MANY_CONNECTIONS")
        assert headers["connection"] == "close" and int(headers["retry-after"]) > 0
        for sock in served:  # the open connections are still served, on the same sockets
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in opened:
            sock.close()
    wait_until(lambda: guarded.get("/ping").status_code == 200, 10, what="a new connection once others closed")
    assert sample(scrape(guarded.url + "/metrics"), "proxy_connections_refused_total") >= 1


def test_headers_slower_than_the_header_timeout_get_408_and_the_connection_is_closed(guarded):
    started = time.monotonic()
    raw = exchange(guarded, b"POST /invocations HTTP/1.1\r\nHost: x\r\n", wait=HEADER_TIMEOUT_S + 10)
    assert_own_error(raw, 408, "REQUEST_TIMEOUT")
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 2
    with connect(guarded) as silent:  # a connection that sends nothing at all
        assert_own_error(read_until_closed(silent, HEADER_TIMEOUT_S + 10), 408, "REQUEST_TIMEOUT")


def test_a_body_slower_than_the_body_timeout_gets_408_and_the_connection_is_closed(guarded):
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + SECRET.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        sock.settimeout(0.3)
        received = b""
        while time.monotonic() - started < BODY_TIMEOUT_S + 10 and b"\r\n\r\n" not in received:
            try:
                sock.sendall(b" ")  # one byte now and then: it never ends
                received += sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        answered_after = time.monotonic() - started
        received += read_until_closed(sock, 5)
    headers = assert_own_error(received, 408, "REQUEST_TIMEOUT")
    assert headers["connection"] == "close" and answered_after < BODY_TIMEOUT_S + 2


def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(guarded):
    with requests.Session() as session:
        assert session.get(guarded.url + "/ping", timeout=10).status_code == 200
        time.sleep(HEADER_TIMEOUT_S * 2)  # idle between requests: the keep-alive time applies, not the header time
        assert session.get(guarded.url + "/ping", timeout=10).status_code == 200


# -- what an unauthenticated client can learn (the guarded proxy) --------------------------------


def test_health_shows_a_probe_what_it_needs_and_the_details_only_with_the_token(guarded):
    probe = guarded.get("/health")
    assert probe.status_code == 200
    assert probe.json() == {"status": "healthy", "version": "2", "ready": True}
    full = guarded.get("/health", headers={"Authorization": f"Bearer {SECRET}"}).json()
    assert {"status", "version", "ready", "model", "upstream", "registry"} <= set(full)
    assert full["upstream"]["state"] == "ready"


def test_credentials_in_the_upstream_url_are_shown_nowhere(guarded):
    assert guarded.predict(headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
    health = guarded.get("/health", headers={"Authorization": f"Bearer {SECRET}"})
    assert UPSTREAM_PASSWORD not in health.text and "://***@" in health.json()["upstream"]["url"]
    assert "://***@" in guarded.output().splitlines()[0]  # the start-up line
    assert UPSTREAM_PASSWORD not in guarded.output() and SECRET not in guarded.output()


def test_the_access_log_names_the_method_path_status_and_request_id_and_nothing_else_of_the_request(guarded):
    answer = guarded.post(
        "/predict?api_key=query-secret",
        json=ROW,
        headers={
            "Authorization": f"Bearer {SECRET}",
            "X-Request-Id": "trace-me-42",
            "User-Agent": "agent-secret",
            "Referer": "https://referer-secret.example",
        },
    )
    assert answer.status_code == 200
    time.sleep(0.2)  # the line is written as the answer goes out
    lines = [line for line in guarded.output().splitlines() if "serving.access" in line and "trace-me-42" in line]
    assert len(lines) == 1 and " POST /predict 200 " in lines[0]
    assert not any(secret in guarded.output() for secret in ("query-secret", "agent-secret", "referer-secret", SECRET))
