"""The background copies (``serving.shadow``) in process, against a fake model server: fast and deterministic."""

import asyncio

from iris_core.resolver import Resolved
from serving.forwarding import UpstreamError
from serving.shadow import ShadowScorer
from tests.serving.fakes import FakeServer, settle


def run(body):
    asyncio.run(asyncio.wait_for(body(), timeout=10))


def server(answer=None, delay: float = 0.0) -> FakeServer:
    fake = FakeServer(Resolved("3"))
    if answer is not None:
        fake.answer = answer
    fake.delay = delay
    return fake


def rows(n: int, first: float = 5.0) -> list[list[float]]:
    return [[first + i / 100, 3.0, 1.4, 0.2] for i in range(n)]


def answers(*classes: str) -> list[dict]:
    return [{"prediction": name} for name in classes]


def test_copies_are_scored_and_each_row_compared_with_the_answer_the_client_got():
    async def body():
        challenger = server(answer=lambda batch: ["setosa" if row[0] < 5.015 else "virginica" for row in batch])
        scorer = ShadowScorer(challenger, None, rate=1.0, timeout=1.0, fill_s=0)
        scorer.start()
        scorer.offer(rows(2), answers("setosa", "setosa"), "2")
        scorer.offer(rows(2, first=5.02), answers("setosa", "virginica"), "2")
        await settle()
        counts = scorer.counts["2"]
        assert (counts.rows, counts.agreed, counts.errors) == (4, 3, 0)
        assert counts.pairs == {"setosa>setosa": 2, "setosa>virginica": 1, "virginica>virginica": 1}
        await scorer.close()

    run(body)


def test_copies_queued_while_a_call_is_out_go_together_in_one_call():
    async def body():
        challenger = server(delay=0.05)
        scorer = ShadowScorer(challenger, None, rate=1.0, timeout=1.0, fill_s=0)
        scorer.start()
        scorer.offer(rows(1), answers("setosa"), "2")
        await settle()
        for _ in range(4):
            scorer.offer(rows(1), answers("setosa"), "2")
        await asyncio.sleep(0.2)
        assert [len(call) for call in challenger.scored] == [1, 4]
        await scorer.close()

    run(body)


def test_a_hung_shadow_server_costs_the_caller_nothing_times_out_and_the_full_queue_drops_and_counts():
    async def body():
        challenger = server(delay=3600)
        scorer = ShadowScorer(challenger, None, rate=1.0, timeout=0.05, max_batch_rows=4, max_queued_rows=8, fill_s=0)
        scorer.start()
        scorer.offer(rows(2), answers("setosa", "setosa"), "2")
        await settle()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(19):
            scorer.offer(rows(2), answers("setosa", "setosa"), "2")
        assert loop.time() - started < 0.01, "offering never waits"
        await settle()
        assert len(challenger.scored) == 1, "one call at a time"
        assert scorer.dropped_rows == 40 - 2 - 8  # one request went out, four wait, the rest found the queue full
        await asyncio.sleep(0.25)
        counts = scorer.counts["2"]
        assert counts.errors == counts.rows and counts.rows >= 4 and counts.agreed == 0
        await scorer.close()

    run(body)


def test_a_failing_shadow_server_counts_errors_and_never_raises():
    async def body():
        def fail(batch):
            raise UpstreamError(502, "UPSTREAM_ERROR", "the model server failed to score the rows")

        scorer = ShadowScorer(server(answer=fail), None, rate=1.0, timeout=1.0, fill_s=0)
        scorer.start()
        scorer.offer(rows(3), answers("setosa", "setosa", "setosa"), "2")
        await settle()
        counts = scorer.counts["2"]
        assert (counts.rows, counts.errors, counts.error_rate) == (3, 3, 1.0)
        await scorer.close()

    run(body)


def test_the_shadow_rate_copies_an_exact_share_of_requests():
    async def body():
        challenger = server()
        scorer = ShadowScorer(challenger, None, rate=0.25, timeout=1.0, fill_s=0)
        scorer.start()
        for _ in range(100):
            scorer.offer(rows(1), answers("setosa"), "2")
            await settle()
        assert scorer.offered_requests == 25 and scorer.counts["2"].rows == 25
        await scorer.close()

    run(body)


def test_copies_compared_with_different_live_versions_are_counted_apart():
    async def body():
        scorer = ShadowScorer(server(), None, rate=1.0, timeout=1.0, fill_s=0)
        scorer.start()
        scorer.offer(rows(1), answers("setosa"), "1")
        scorer.offer(rows(2), answers("setosa", "setosa"), "2")
        await settle()
        assert {version: c.rows for version, c in scorer.counts.items()} == {"1": 1, "2": 2}
        await scorer.close()

    run(body)


def test_closing_drops_what_is_still_queued_and_counts_it():
    async def body():
        scorer = ShadowScorer(server(delay=3600), None, rate=1.0, timeout=10.0, fill_s=0)
        scorer.start()
        scorer.offer(rows(1), answers("setosa"), "2")
        await settle()
        scorer.offer(rows(1), answers("setosa"), "2")
        scorer.offer(rows(1), answers("setosa"), "2")
        await scorer.close()
        assert scorer.dropped_rows == 2

    run(body)


def test_copies_wait_for_a_full_call_or_for_fill_s_then_go_together():
    async def body():
        challenger = server()
        scorer = ShadowScorer(challenger, None, rate=1.0, timeout=1.0, max_batch_rows=8, fill_s=0.3)
        scorer.start()
        for _ in range(3):
            scorer.offer(rows(1), answers("setosa"), "2")
        await settle()
        assert challenger.scored == [], "three rows wait for company"
        for _ in range(5):
            scorer.offer(rows(1), answers("setosa"), "2")
        await settle()
        assert [len(call) for call in challenger.scored] == [8], "a full call goes at once"
        scorer.offer(rows(1), answers("setosa"), "2")
        await asyncio.sleep(0.1)
        assert len(challenger.scored) == 1
        await asyncio.sleep(0.4)
        assert [len(call) for call in challenger.scored] == [8, 1], "a lone copy goes after fill_s"
        await scorer.close()

    run(body)
