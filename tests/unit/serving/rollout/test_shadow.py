"""The background copies (``serving.rollout.shadow``) in process, against a fake model server: fast and deterministic."""

import asyncio
import contextlib
import http.server
import threading

import aiohttp
import orjson

from iris_core.resolver import Resolved
from serving.rollout.shadow import COPY_ROWS, ShadowScorer
from serving.upstreams.forwarding import UpstreamError
from serving.upstreams.servers import ExternalUpstream
from tests.helpers.fakes import FakeServer, settle


def run(body):
    asyncio.run(asyncio.wait_for(body(), timeout=30))


def server(answer=None, delay: float = 0.0) -> FakeServer:
    fake = FakeServer(Resolved("3"))
    if answer is not None:
        fake.answer = answer
    fake.delay = delay
    return fake


def running_scorer(challenger, session=None, **settings) -> ShadowScorer:
    """A running scorer of copies for ``challenger``: every request copied, a 1 s deadline, no waiting to fill a call."""
    scorer = ShadowScorer(challenger, session, **{"rate": 1.0, "timeout": 1.0, "fill_s": 0, **settings})
    scorer.start()
    return scorer


def rows(n: int, first: float = 5.0) -> list[list[float]]:
    return [[first + i / 100, 3.0, 1.4, 0.2] for i in range(n)]


def answers(*classes: str) -> list[dict]:
    return [{"prediction": name} for name in classes]


def test_copies_are_scored_and_each_row_compared_with_the_answer_the_client_got():
    async def body():
        challenger = server(answer=lambda batch: ["setosa" if row[0] < 5.015 else "virginica" for row in batch])
        scorer = running_scorer(challenger)
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
        scorer = running_scorer(challenger)
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
        scorer = running_scorer(challenger, timeout=0.05, max_batch_rows=4, max_queued_rows=8)
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

        scorer = running_scorer(server(answer=fail))
        scorer.offer(rows(3), answers("setosa", "setosa", "setosa"), "2")
        await settle()
        counts = scorer.counts["2"]
        assert (counts.rows, counts.errors, counts.error_rate) == (3, 3, 1.0)
        await scorer.close()

    run(body)


def test_the_shadow_rate_copies_an_exact_share_of_requests():
    async def body():
        challenger = server()
        scorer = running_scorer(challenger, rate=0.25)
        for _ in range(100):
            scorer.offer(rows(1), answers("setosa"), "2")
            await settle()
        assert scorer.offered_requests == 25 and scorer.counts["2"].rows == 25
        await scorer.close()

    run(body)


def test_copies_compared_with_different_live_versions_are_counted_apart():
    async def body():
        scorer = running_scorer(server())
        scorer.offer(rows(1), answers("setosa"), "1")
        scorer.offer(rows(2), answers("setosa", "setosa"), "2")
        await settle()
        assert {version: c.rows for version, c in scorer.counts.items()} == {"1": 1, "2": 2}
        await scorer.close()

    run(body)


def test_closing_drops_what_is_still_queued_and_counts_it():
    async def body():
        scorer = running_scorer(server(delay=3600), timeout=10.0)
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
        scorer = running_scorer(challenger, max_batch_rows=8, fill_s=0.3)
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


def test_a_request_larger_than_a_copy_is_copied_as_a_random_sample_of_its_rows_not_dropped():
    async def body():
        challenger = server()
        scorer = running_scorer(challenger)
        big = rows(5000)
        scorer.offer(big, answers(*["setosa"] * 5000), "2")
        await settle()
        assert [len(call) for call in challenger.scored] == [COPY_ROWS] and scorer.dropped_rows == 0
        assert all(row in big for row in challenger.scored[0]) and challenger.scored[0] != big[:COPY_ROWS]
        assert scorer.counts["2"].rows == COPY_ROWS
        await scorer.close()

    run(body)


class LargeAnswers(http.server.BaseHTTPRequestHandler):
    """A model server whose answer gives each of 64 rows 200 KB of padding beside its prediction.

    The answer is made once, before the test's event loop runs: made in this thread, it
    would hold the interpreter (and with it the loop) while it is encoded.
    """

    body = orjson.dumps({"predictions": [{"prediction": "setosa", "padding": "x" * 200_000}] * COPY_ROWS})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = self.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the proxy may stop reading and close
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_shadow_answer_past_a_kilobyte_a_row_is_a_counted_error_never_read_whole_and_never_holds_the_loop():
    """64 rows answered with 12.8 MB: read no further than 68 KB, not parsed, a counted error for each row."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LargeAnswers)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    async def body():
        target = ExternalUpstream(f"http://127.0.0.1:{httpd.server_address[1]}", "3")
        gaps = []

        async def ticker():
            loop = asyncio.get_running_loop()
            while True:
                before = loop.time()
                await asyncio.sleep(0.001)
                gaps.append(loop.time() - before)

        async with aiohttp.ClientSession() as session:
            scorer = running_scorer(target, session=session, timeout=10.0)
            watching = asyncio.ensure_future(ticker())
            for _ in range(3):
                scorer.offer(rows(COPY_ROWS), answers(*["setosa"] * COPY_ROWS), "2")
            while scorer.counts.get("2") is None or scorer.counts["2"].rows < 3 * COPY_ROWS:
                await asyncio.sleep(0.01)
            watching.cancel()
            await scorer.close()
        counts = scorer.counts["2"]
        assert (counts.rows, counts.errors) == (3 * COPY_ROWS, 3 * COPY_ROWS)
        assert max(gaps) < 0.05, f"the event loop was held {max(gaps) * 1000:.0f} ms"

    try:
        run(body)
    finally:
        httpd.shutdown()
        httpd.server_close()
