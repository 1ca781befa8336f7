"""Adaptive micro-batching against a real `mlflow models serve`: same answers, failures kept to their batch.

The forwarders are driven directly, in one event loop per test, with a real aiohttp
session to the session's upstream (``upstream_url`` in conftest); the test of bad
requests goes through the shared `python -m serving` (``proxy``), which batches by default.
"""

import asyncio
import json
import math
from types import SimpleNamespace

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.config import ServingConfig
from serving.upstreams.batching import BatchingForwarder
from serving.upstreams.forwarding import DirectForwarder, UpstreamError
from serving.upstreams.servers import ExternalUpstream
from tests.helpers.fakes import IRIS_FACTS
from tests.helpers.iris import FEATURES
from tests.helpers.support import free_port

pytestmark = pytest.mark.slow

feature = st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False)
row = st.lists(feature, min_size=4, max_size=4)
request_rows = st.lists(row, min_size=1, max_size=4)
HYPOTHESIS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def config(**overrides) -> ServingConfig:
    return ServingConfig(**{"upstream": "http://127.0.0.1:1", "timeout": 60.0, **overrides})


def router_for(url: str, version: str = "2") -> SimpleNamespace:
    """The forwarders read only ``router.live``; a real ``ExternalUpstream`` stands behind it."""
    return SimpleNamespace(live=ExternalUpstream(url, version, facts=IRIS_FACTS))


def dead_url() -> str:
    """A loopback port nothing listens on: what a stopped upstream looks like to the proxy."""
    return f"http://127.0.0.1:{free_port()}"


def run(coroutine_function, *args):
    """Run one test body in a fresh event loop with a real keep-alive session to the upstream."""

    async def body():
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), timeout=timeout) as session:
            return await coroutine_function(session, *args)

    return asyncio.run(body())


async def score_concurrently(forwarder, requests: list) -> list:
    return await asyncio.gather(*(forwarder.predict(rows) for rows in requests), return_exceptions=True)


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
        pairs = [(await batching.predict(rows), await direct.predict(rows)) for rows in requests]
        return pairs, batching.batches_sent

    pairs, batches = run(body)
    assert all(batched.predictions == direct.predictions for batched, direct in pairs)
    assert batches == len(requests)  # nothing was queued beside them: each went out alone


@HYPOTHESIS
@given(rows=st.lists(row, min_size=1, max_size=40))
def test_the_columnar_body_sent_upstream_gets_the_answers_of_mlflows_dataframe_split(upstream_url, rows):
    async def body(session):
        split = {"dataframe_split": {"columns": list(FEATURES), "data": rows * 2 if len(rows) == 1 else rows}}
        async with session.post(f"{upstream_url}/invocations", json=split) as response:
            assert response.status == 200
            asked_directly = (await response.json())["predictions"][: len(rows)]
        return asked_directly, await DirectForwarder(router_for(upstream_url), session, config()).predict(rows)

    asked_directly, scored = run(body)
    assert scored.predictions == asked_directly


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
        return await asyncio.wait_for(batching.predict([[5.1, 3.5, 1.4, 0.2]]), timeout=120)

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
        batching = BatchingForwarder(
            router, session, config(max_batch_rows=3, max_batch_wait_ms=600_000), max_inflight_batches=2
        )
        doomed = [asyncio.ensure_future(batching.predict([setosa])) for i in range(4)]
        await asyncio.sleep(0)
        assert batching.batches_sent == 2
        router.live = ExternalUpstream(upstream_url, "2", facts=IRIS_FACTS)
        spared = [asyncio.ensure_future(batching.predict([virginica])) for i in range(3)]
        return await asyncio.gather(*doomed, return_exceptions=True), await asyncio.gather(
            *spared, return_exceptions=True
        )

    doomed, spared = run(body)
    assert all(isinstance(result, UpstreamError) and result.status == 503 for result in doomed)
    assert [(scored.version, scored.predictions[0]["prediction"]) for scored in spared] == [("2", "virginica")] * 3


def test_an_upstream_error_answer_gives_each_request_of_the_batch_its_own_502(upstream_url):
    async def body(session):
        upstream = ExternalUpstream(upstream_url, "2", facts=IRIS_FACTS)
        upstream.invocations_url = f"{upstream_url}/no-such-endpoint"  # the real server answers 404
        batching = BatchingForwarder(SimpleNamespace(live=upstream), session, config())
        return await score_concurrently(batching, [[[5.1, 3.5, 1.4, 0.2]]] * 5)

    results = run(body)
    assert all(isinstance(result, UpstreamError) and result.status == 502 for result in results)


BAD_BODIES = [
    b'{"dataframe_split": ',
    b'{"dataframe_records": [{"sepal_length": NaN}]}',
    b'{"dataframe_records": [{"sepal_length": 1}]}',
    json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [[5.1, 3.5, "1.4", 0.2]]}}).encode(),
    json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [[5.1, 3.5, 1.4, -0.2]]}}).encode(),
]


def test_bad_requests_in_a_batch_window_never_affect_the_good_ones(proxy):
    rows = [[4.0 + i / 10, 3.0, 1.0 + i / 5, 0.1 + i / 20] for i in range(40)]
    goods = [json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [row]}}).encode() for row in rows]
    bads = BAD_BODIES * 8
    mixed = [body for pair in zip(goods, bads) for body in pair]

    async def body(session):
        async def post(data: bytes):
            async with session.post(
                f"{proxy.url}/invocations", data=data, headers={"Content-Type": "application/json"}
            ) as response:
                return response.status, await response.json()

        together = await asyncio.gather(*(post(data) for data in mixed))
        one_by_one = [await post(data) for data in goods]
        return together, one_by_one

    together, one_by_one = run(body)
    good_answers, bad_answers = together[0::2], together[1::2]
    assert all(status == 400 and body["error_code"] for status, body in bad_answers)
    assert [status for status, _ in good_answers] == [200] * len(goods)
    assert good_answers == one_by_one


@pytest.mark.parametrize(("wait_ms", "batches_at_once"), [(0, 2), (600_000, 1)])
def test_with_two_workers_a_request_is_held_back_only_up_to_the_batch_wait(upstream_url, wait_ms, batches_at_once):
    async def body(session):
        batching = BatchingForwarder(router_for(upstream_url), session, config(workers=2, max_batch_wait_ms=wait_ms))
        first = asyncio.ensure_future(batching.predict([[5.1, 3.5, 1.4, 0.2]]))
        await asyncio.sleep(0)  # the first goes out at once: nothing was in flight
        second = asyncio.ensure_future(batching.predict([[7.7, 3.0, 6.1, 2.3]]))
        await asyncio.sleep(0)
        sent_at_once = batching.batches_sent
        answers = await asyncio.gather(first, second)
        return sent_at_once, [scored.predictions[0]["prediction"] for scored in answers]

    sent_at_once, predictions = run(body)
    assert sent_at_once == batches_at_once
    assert predictions == ["setosa", "virginica"]


def test_with_one_worker_a_batch_goes_out_only_when_the_previous_one_is_back(upstream_url):
    async def body(session):
        batching = BatchingForwarder(router_for(upstream_url), session, config(workers=1, max_batch_wait_ms=0))
        first = asyncio.ensure_future(batching.predict([[5.1, 3.5, 1.4, 0.2]]))
        await asyncio.sleep(0)
        others = [asyncio.ensure_future(batching.predict([[7.7, 3.0, 6.1, 2.3]])) for i in range(5)]
        await asyncio.sleep(0)
        sent_while_busy = batching.batches_sent
        await asyncio.gather(first, *others)
        return sent_while_busy, batching.batches_sent

    sent_while_busy, sent = run(body)
    assert (sent_while_busy, sent) == (1, 2)
