"""Adaptive micro-batching against a real `mlflow models serve`: same answers, failures kept to their batch.

The forwarders are driven directly, in one event loop per test, with a real aiohttp
session to a real upstream; the proxy-level test goes through `python -m serving`.
"""

import asyncio
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.batching import BatchingForwarder
from serving.config import ServingConfig
from serving.forwarding import DirectForwarder, UpstreamError
from serving.upstream import ExternalUpstream
from tests.conftest import BIN, sqlite_uri
from tests.support import free_port, http_ok, stop_process, wait_until

pytestmark = pytest.mark.slow

feature = st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False)
row = st.lists(feature, min_size=4, max_size=4)
request_rows = st.lists(row, min_size=1, max_size=4)
HYPOTHESIS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="session")
def upstream_url(trained_registry, tmp_path_factory):
    """A real `mlflow models serve` of version 2 of the session registry, on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("batching-upstream") / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": sqlite_uri(trained_registry), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", "models:/iris/2", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            cwd=trained_registry, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_ok(f"{url}/ping"), timeout=180, what=f"mlflow models serve (log: {log})")
        yield url
    finally:
        stop_process(proc)


def config(**overrides) -> ServingConfig:
    return ServingConfig(**{"upstream": "http://127.0.0.1:1", "timeout": 60.0, **overrides})


def router_for(url: str, version: str = "2") -> SimpleNamespace:
    """The forwarders read only ``router.live``; a real ``ExternalUpstream`` stands behind it."""
    return SimpleNamespace(live=ExternalUpstream(url, version))


def dead_url() -> str:
    """A loopback port nothing listens on: what a stopped upstream looks like to the proxy."""
    return f"http://127.0.0.1:{free_port()}"


def run(coroutine_function, *args):
    """Run one test body in a fresh event loop with a real keep-alive session to the upstream."""

    async def body():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
            return await coroutine_function(session, *args)

    return asyncio.run(body())


async def score_concurrently(forwarder, requests: list) -> list:
    return await asyncio.gather(*(forwarder.predict(rows, f"r{i}") for i, rows in enumerate(requests)), return_exceptions=True)


@HYPOTHESIS
@given(requests=st.lists(request_rows, min_size=1, max_size=24))
def test_batched_answers_are_identical_to_unbatched_answers_under_concurrency(upstream_url, requests):
    async def body(session):
        router = router_for(upstream_url)
        batching = BatchingForwarder(router, session, config(max_batch_rows=16))
        batched = await score_concurrently(batching, requests)
        await batching.close()
        direct = await score_concurrently(DirectForwarder(router, session, config()), requests)
        return batched, direct

    batched, direct = run(body)
    assert [scored.predictions for scored in batched] == [scored.predictions for scored in direct]
    assert all(scored.version == "2" for scored in batched)
    assert [len(scored.predictions) for scored in batched] == [len(rows) for rows in requests]


@HYPOTHESIS
@given(requests=st.lists(request_rows, min_size=1, max_size=8))
def test_sequential_requests_get_the_same_answers_batched_or_not(upstream_url, requests):
    async def body(session):
        router = router_for(upstream_url)
        batching = BatchingForwarder(router, session, config())
        direct = DirectForwarder(router, session, config())
        pairs = [(await batching.predict(rows, "b"), await direct.predict(rows, "d")) for rows in requests]
        return pairs, batching.batches_sent

    pairs, batches = run(body)
    assert all(batched.predictions == direct.predictions for batched, direct in pairs)
    assert batches == len(requests)  # nothing was queued beside them: each went out alone


def test_concurrent_requests_share_upstream_calls(upstream_url):
    requests = [[[5.1, 3.5, 1.4, 0.2]], [[6.2, 2.9, 4.3, 1.3]], [[7.7, 3.0, 6.1, 2.3]]] * 10

    async def body(session):
        batching = BatchingForwarder(router_for(upstream_url), session, config())
        results = await score_concurrently(batching, requests)
        return results, batching.batches_sent, batching.requests_sent

    results, batches, sent = run(body)
    assert [scored.predictions[0]["prediction"] for scored in results] == ["setosa", "versicolor", "virginica"] * 10
    assert sent == len(requests)
    assert batches < len(requests)


def test_a_lone_request_goes_out_without_waiting_for_the_batch_window(upstream_url):
    async def body(session):
        batching = BatchingForwarder(router_for(upstream_url), session, config(max_batch_wait_ms=600_000))
        return await asyncio.wait_for(batching.predict([[5.1, 3.5, 1.4, 0.2]], "lone"), timeout=120)

    scored = run(body)
    assert scored.predictions[0]["prediction"] == "setosa"


def test_no_batch_exceeds_max_batch_rows_and_no_request_is_split(upstream_url):
    requests = [[[5.1, 3.5, 1.4, 0.2]] * size for size in (3, 1, 2, 3, 2, 1, 3, 5)]

    async def body(session):
        batching = BatchingForwarder(router_for(upstream_url), session, config(max_batch_rows=4))
        return await score_concurrently(batching, requests), batching.batches_sent

    results, batches = run(body)
    assert [len(scored.predictions) for scored in results] == [len(rows) for rows in requests]
    assert batches >= math.ceil(sum(map(len, requests)) / 4)


def test_an_upstream_failure_fails_only_the_requests_of_that_batch(upstream_url):
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]

    async def body(session):
        router = router_for(dead_url(), version="1")
        # Four rows a batch and two batches in flight at most: the first request goes out
        # alone, the next three fill a batch; both are sent to the dead upstream at once.
        batching = BatchingForwarder(router, session, config(max_batch_rows=3, max_batch_wait_ms=600_000), max_inflight_batches=2)
        doomed = [asyncio.ensure_future(batching.predict([setosa], f"doomed{i}")) for i in range(4)]
        await asyncio.sleep(0)
        assert batching.batches_sent == 2
        router.live = ExternalUpstream(upstream_url, "2")
        spared = [asyncio.ensure_future(batching.predict([virginica], f"spared{i}")) for i in range(3)]
        return await asyncio.gather(*doomed, return_exceptions=True), await asyncio.gather(*spared, return_exceptions=True)

    doomed, spared = run(body)
    assert all(isinstance(result, UpstreamError) and result.status == 503 for result in doomed)
    assert [(scored.version, scored.predictions[0]["prediction"]) for scored in spared] == [("2", "virginica")] * 3


def test_an_upstream_error_answer_gives_each_request_of_the_batch_its_own_502(upstream_url):
    async def body(session):
        upstream = ExternalUpstream(upstream_url, "2")
        upstream.invocations_url = f"{upstream_url}/no-such-endpoint"  # the real server answers 404
        batching = BatchingForwarder(SimpleNamespace(live=upstream), session, config())
        return await score_concurrently(batching, [[[5.1, 3.5, 1.4, 0.2]]] * 5)

    results = run(body)
    assert all(isinstance(result, UpstreamError) and result.status == 502 for result in results)
