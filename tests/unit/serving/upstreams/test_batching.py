"""The micro-batcher's scheduling, in process against a fake upstream: fast and deterministic.

What only a real model server can show (batched answers identical to the bit, the real
failure modes) is in ``test_batching.py``; this file pins the rules of
``serving.upstreams.batching``: a lone request goes at once, requests that arrive while a batch is
in flight go out together when it returns, never more batches in flight than workers, a
request is never split, a failed batch fails only its own requests, a request whose
client went away is not sent, and every request is answered by its own deadline.
"""

import asyncio
from types import SimpleNamespace

import pytest

from serving.config import ServingConfig
from serving.rollout.delivery import CanaryRoute
from serving.upstreams.batching import BatchingForwarder
from serving.upstreams.forwarding import DirectForwarder, UpstreamError
from tests.helpers.fakes import FakeScorer, settle


def forwarder(scorer: FakeScorer, **settings) -> BatchingForwarder:
    config = ServingConfig(upstream="http://127.0.0.1:1", **settings)
    return BatchingForwarder(SimpleNamespace(live=scorer), None, config)


def rows(*firsts: float) -> list[list[float]]:
    return [[first, 3.0, 1.4, 0.2] for first in firsts]


def run(body):
    asyncio.run(asyncio.wait_for(body(), timeout=10))


def test_a_lone_request_is_sent_at_once_without_waiting_for_company():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer, max_batch_wait_ms=10_000)
        request = asyncio.ensure_future(batcher.predict(rows(5.1)))
        await settle()
        assert [call.rows for call in scorer.calls] == [rows(5.1)]
        scorer.calls[0].answer()
        assert (await request).predictions == [{"prediction": "setosa", "first_value": 5.1}]

    run(body)


def test_requests_that_arrive_during_a_call_go_out_together_when_it_returns_each_with_its_own_answer():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer)
        first = asyncio.ensure_future(batcher.predict(rows(1.0)))
        await settle()
        later = [asyncio.ensure_future(batcher.predict(rows(2.0 + i, 2.5 + i))) for i in range(4)]
        await settle()
        assert len(scorer.calls) == 1, "nothing more may go out while the one worker is busy"
        scorer.calls[0].answer()
        await settle()
        assert len(scorer.calls) == 2
        assert scorer.calls[1].rows == [row for i in range(4) for row in rows(2.0 + i, 2.5 + i)]
        scorer.calls[1].answer()
        assert [r["first_value"] for r in (await first).predictions] == [1.0]
        for i, request in enumerate(later):
            assert [r["first_value"] for r in (await request).predictions] == [2.0 + i, 2.5 + i]
        assert (batcher.batches_sent, batcher.requests_sent) == (2, 5)

    run(body)


class BodyAStepLater(FakeScorer):
    """An upstream client that puts a call's body on the wire one loop step after the call, as aiohttp's does before Python 3.12."""

    def __init__(self, events: list[str]):
        super().__init__()
        self.events = events

    async def score(self, session, rows, timeout):
        await asyncio.sleep(0)
        self.events.append(f"batch {len(self.calls) + 1} sent")
        return await super().score(session, rows, timeout)


def test_the_next_batch_is_on_the_wire_before_the_returning_batchs_requests_are_answered():
    """Else answering them (and reading their clients' next requests) holds the loop while the model server waits."""

    async def body():
        events: list[str] = []
        scorer = BodyAStepLater(events)
        batcher = forwarder(scorer)

        async def request(first: float) -> None:
            await batcher.predict(rows(first))
            events.append("answered")

        first = asyncio.ensure_future(request(1.0))
        await settle()
        queued = [asyncio.ensure_future(request(2.0 + i)) for i in range(3)]
        await settle()
        scorer.calls[0].answer()
        await settle()
        assert events == ["batch 1 sent", "batch 2 sent", "answered"]
        scorer.calls[1].answer()
        await asyncio.gather(first, *queued)

    run(body)


def test_no_more_batches_are_in_flight_than_the_upstream_has_workers():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer, workers=2, max_batch_wait_ms=0)
        requests = []
        for i in range(6):
            requests.append(asyncio.ensure_future(batcher.predict(rows(float(i + 1)))))
            await settle()
        assert len(scorer.calls) == 2 and scorer.most_in_flight == 2
        while not all(request.done() for request in requests):
            for call in scorer.calls:
                if not call.done.done():
                    call.answer()
            await settle()
        assert scorer.most_in_flight == 2
        assert sorted(r["first_value"] for request in requests for r in request.result().predictions) == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]

    run(body)


def test_a_batch_holds_at_most_max_batch_rows_and_never_splits_a_request():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer, max_batch_rows=4)
        blocker = asyncio.ensure_future(batcher.predict(rows(1.0)))
        await settle()
        queued = [
            asyncio.ensure_future(batcher.predict(rows(*[float(10 * i + j) for j in range(3)]))) for i in range(3)
        ]
        big = asyncio.ensure_future(batcher.predict(rows(*[float(100 + j) for j in range(6)])))
        await settle()
        while not all(r.done() for r in (blocker, *queued, big)):
            for call in scorer.calls:
                if not call.done.done():
                    call.answer()
            await settle()
        sizes = [len(call.rows) for call in scorer.calls]
        assert sizes == [1, 3, 3, 3, 6], "three-row requests cannot share a four-row batch; the six-row one goes alone"
        assert [r["first_value"] for r in big.result().predictions] == [float(100 + j) for j in range(6)]

    run(body)


def test_a_failed_batch_fails_only_its_own_requests():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer)
        doomed = asyncio.ensure_future(batcher.predict(rows(1.0)))
        await settle()
        spared = [asyncio.ensure_future(batcher.predict(rows(2.0))) for _ in range(3)]
        await settle()
        scorer.calls[0].fail(502)
        await settle()
        scorer.calls[1].answer()
        with pytest.raises(UpstreamError) as failure:
            await doomed
        assert failure.value.status == 502
        assert [len(scored.predictions) for scored in await asyncio.gather(*spared)] == [1, 1, 1]

    run(body)


def test_a_request_whose_client_went_away_is_not_sent():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer)
        first = asyncio.ensure_future(batcher.predict(rows(1.0)))
        await settle()
        gone = asyncio.ensure_future(batcher.predict(rows(9.0)))
        kept = asyncio.ensure_future(batcher.predict(rows(2.0)))
        await settle()
        gone.cancel()
        await settle()
        scorer.calls[0].answer()
        await settle()
        assert scorer.calls[1].rows == rows(2.0)
        scorer.calls[1].answer()
        await first, await kept

    run(body)


def test_every_request_of_a_batch_reports_the_version_live_when_it_was_sent():
    async def body():
        old, new = FakeScorer("1"), FakeScorer("2")
        router = SimpleNamespace(live=old)
        batcher = BatchingForwarder(router, None, ServingConfig(upstream="http://127.0.0.1:1"))
        first = asyncio.ensure_future(batcher.predict(rows(1.0)))
        await settle()
        waiting = [asyncio.ensure_future(batcher.predict(rows(2.0))) for _ in range(2)]
        await settle()
        router.live = new  # a rollout switches while the second batch waits
        old.calls[0].answer()
        await settle()
        new.calls[0].answer()
        assert (await first).version == "1"
        assert {(await request).version for request in waiting} == {"2"}

    run(body)


def test_a_request_for_a_chosen_upstream_goes_there_in_a_batch_of_its_own_and_others_keep_their_place():
    async def body():
        live, warm = FakeScorer("2"), FakeScorer("1")
        batcher = BatchingForwarder(SimpleNamespace(live=live), None, ServingConfig(upstream="http://127.0.0.1:1"))
        first = asyncio.ensure_future(batcher.predict(rows(1.0)))
        warm_blocker = asyncio.ensure_future(batcher.predict(rows(0.5), upstream=warm))
        await settle()
        queued = [
            asyncio.ensure_future(batcher.predict(rows(2.0))),
            asyncio.ensure_future(batcher.predict(rows(3.0), upstream=warm)),
            asyncio.ensure_future(batcher.predict(rows(4.0), upstream=live)),
            asyncio.ensure_future(batcher.predict(rows(5.0), upstream=warm)),
        ]
        await settle()
        live.calls[0].answer()
        await settle()
        assert [call.rows for call in live.calls[1:]] == [rows(2.0, 4.0)], "naming the live upstream joins its batch"
        assert len(warm.calls) == 1, "the warm upstream's requests wait for its own worker"
        warm.calls[0].answer()
        await settle()
        assert [call.rows for call in warm.calls[1:]] == [rows(3.0, 5.0)]
        live.calls[1].answer()
        warm.calls[1].answer()
        versions = [(await request).version for request in queued]
        assert versions == ["2", "1", "2", "1"] and (await first).version == "2"
        assert (await warm_blocker).version == "1"


def test_a_slow_upstream_holds_only_its_own_worker_not_the_live_ones():
    """A canary that takes long keeps its own batch in flight; the live version's requests still go out."""

    async def body():
        live, canary = FakeScorer("1"), FakeScorer("2")
        batcher = BatchingForwarder(SimpleNamespace(live=live), None, ServingConfig(upstream="http://127.0.0.1:1"))
        slow = asyncio.ensure_future(batcher.predict(rows(9.0), upstream=canary))
        await settle()
        for round_number in range(3):
            request = asyncio.ensure_future(batcher.predict(rows(float(round_number))))
            await settle()
            live.calls[-1].answer()
            assert (await request).version == "1"
        assert len(canary.calls) == 1 and not slow.done()
        canary.calls[0].answer()
        assert (await slow).version == "2"

    run(body)


def test_without_batching_a_request_goes_to_its_chosen_upstream_or_else_to_the_live_one():
    async def body():
        live, warm = FakeScorer("2"), FakeScorer("1")
        direct = DirectForwarder(SimpleNamespace(live=live), None, ServingConfig(upstream="http://127.0.0.1:1"))
        chosen = asyncio.ensure_future(direct.predict(rows(1.0), upstream=warm))
        default = asyncio.ensure_future(direct.predict(rows(2.0)))
        await settle()
        warm.calls[0].answer()
        live.calls[0].answer()
        assert ((await chosen).version, (await default).version) == ("1", "2")

    run(body)


def test_close_answers_everything_queued_and_in_flight_before_it_returns():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer, workers=2, max_batch_wait_ms=10_000)
        first = asyncio.ensure_future(batcher.predict(rows(1.0)))
        await settle()
        queued = asyncio.ensure_future(batcher.predict(rows(2.0)))
        await settle()
        assert len(scorer.calls) == 1, "the second request waits to fill a batch"
        closing = asyncio.ensure_future(batcher.close())
        await settle()
        assert len(scorer.calls) == 2, "closing sends the queue at once, without waiting for company"
        assert not closing.done(), "closing waits for the batches in flight"
        for call in scorer.calls:
            call.answer()
        await closing
        assert first.done() and queued.done()

    run(body)


def test_a_hung_upstream_answers_each_request_504_at_its_own_deadline_queued_or_in_flight():
    async def body():
        scorer = FakeScorer()  # never settled: a model server that stopped answering
        batcher = forwarder(scorer)
        loop = asyncio.get_running_loop()
        start = loop.time()
        in_flight = asyncio.ensure_future(batcher.predict(rows(1.0), deadline=start + 0.2))
        await settle()
        queued = [asyncio.ensure_future(batcher.predict(rows(2.0), deadline=start + 0.05 * i)) for i in (1, 2)]
        answered_at = {}
        for request in (*queued, in_flight):
            request.add_done_callback(lambda r: answered_at.setdefault(r, loop.time() - start))
        await asyncio.wait([in_flight, *queued], timeout=2)
        for request in (*queued, in_flight):
            assert isinstance(request.exception(), UpstreamError) and request.exception().status == 504
        assert len(scorer.calls) == 1, "the queued requests were never sent: their deadline passed first"
        for request, deadline in zip((*queued, in_flight), (0.05, 0.1, 0.2)):
            assert deadline <= answered_at[request] < deadline + 0.05

    run(body)


def test_a_batch_call_is_given_until_the_latest_deadline_of_its_requests():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer)
        now = asyncio.get_running_loop().time()
        first = asyncio.ensure_future(batcher.predict(rows(1.0), deadline=now + 5))
        await settle()
        later = [asyncio.ensure_future(batcher.predict(rows(2.0), deadline=now + d)) for d in (3, 8, 4)]
        await settle()
        assert 4.9 < scorer.calls[0].timeout <= 5
        scorer.calls[0].answer()
        await settle()
        assert 7.9 < scorer.calls[1].timeout <= 8
        scorer.calls[1].answer()
        await asyncio.gather(first, *later)

    run(body)


def test_a_request_whose_deadline_passed_in_the_queue_leaves_no_rows_counted_behind():
    async def body():
        scorer = FakeScorer()
        batcher = forwarder(scorer, workers=2, max_batch_rows=2, max_batch_wait_ms=10_000)
        now = asyncio.get_running_loop().time()
        first = asyncio.ensure_future(batcher.predict(rows(1.0)))
        await settle()
        expired = asyncio.ensure_future(batcher.predict(rows(2.0), deadline=now + 0.01))
        await asyncio.sleep(0.03)
        assert expired.done() and len(scorer.calls) == 1
        waiting = asyncio.ensure_future(batcher.predict(rows(3.0)))
        await settle()
        assert len(scorer.calls) == 1, "one queued row is not a full two-row batch: it waits to fill"
        scorer.calls[0].answer()
        await settle()
        scorer.calls[1].answer()
        assert (await waiting).predictions[0]["first_value"] == 3.0
        await first

    run(body)


def test_a_request_queued_for_the_canary_when_its_canary_ends_goes_to_the_version_serving_then():
    async def body():
        live, canary = FakeScorer("1"), FakeScorer("2")
        router = SimpleNamespace(live=live, canary=canary)
        route = CanaryRoute(router)
        batcher = BatchingForwarder(router, None, ServingConfig(upstream="http://127.0.0.1:1"))
        in_flight = asyncio.ensure_future(batcher.predict(rows(1.0), upstream=route))
        await settle()
        queued = asyncio.ensure_future(batcher.predict(rows(2.0), upstream=route))
        await settle()
        router.canary = None  # rolled back while the second request waited for the canary's worker
        canary.calls[0].answer()
        await settle()
        assert [call.rows for call in live.calls] == [rows(2.0)]
        live.calls[0].answer()
        assert (await queued).version == "1" and (await in_flight).version == "2"

    run(body)


def petal_facts():
    """What the registry says of a version that reads only the two petal measurements."""
    from iris_core.table.contract import Feature, TableContract
    from serving.registry.model_facts import ModelFacts

    contract = TableContract((Feature("petal_length"), Feature("petal_width")), label="species", classes=("a", "b"))
    signature = {"inputs": '[{"type": "double", "name": "petal_length"}, {"type": "double", "name": "petal_width"}]'}
    return ModelFacts.of({"signature": signature, "metadata": {"table_contract": contract.as_dict()}})


@pytest.mark.parametrize("make", [BatchingForwarder, DirectForwarder])
def test_rows_checked_against_one_feature_set_are_scored_by_that_version_after_a_switch_to_another(make):
    async def body():
        old, new = FakeScorer("1"), FakeScorer("2", facts=petal_facts())
        router = SimpleNamespace(live=old)
        forward = make(router, None, ServingConfig(upstream="http://127.0.0.1:1"))
        router.live = new  # the alias moved after the rows were checked against version 1's four features
        request = asyncio.ensure_future(forward.predict(rows(5.1), checked=old))
        fitting = asyncio.ensure_future(forward.predict([[1.4, 0.2]], checked=new))
        await settle()
        assert [call.rows for call in old.calls] == [rows(5.1)] and [call.rows for call in new.calls] == [[[1.4, 0.2]]]
        old.calls[0].answer()
        new.calls[0].answer()
        assert ((await request).version, (await fitting).version) == ("1", "2")

    run(body)


def test_rows_of_one_feature_set_follow_a_switch_to_another_version_of_the_same_features():
    async def body():
        old, new = FakeScorer("1"), FakeScorer("2")
        router = SimpleNamespace(live=old)
        batcher = BatchingForwarder(router, None, ServingConfig(upstream="http://127.0.0.1:1"))
        router.live = new
        request = asyncio.ensure_future(batcher.predict(rows(5.1), checked=old))
        await settle()
        assert old.calls == [] and len(new.calls) == 1
        new.calls[0].answer()
        assert (await request).version == "2"

    run(body)
