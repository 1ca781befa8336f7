"""Copies of answered requests, scored by another model server in the background and compared by class.

Two things need it. ``--shadow challenger`` sends copies of the live version's answered
requests to the challenger, so it is judged on live traffic before it is promoted; and
during a canary rollout the previous version scores copies of a sample of the new
version's requests, so the analysis (``serving.rollout.analysis``) sees where the two disagree.

A copy never delays, changes or fails a client's answer: ``offer`` runs after the answer
is built and only appends to a bounded queue (a full queue drops the copy and counts it);
one worker task sends what is queued, up to ``max_batch_rows`` rows per call and one call
at a time, each with its own timeout. Whatever the other server does (hang, fail, answer
rubbish) ends as counted errors here.

A copy carries at most ``COPY_ROWS`` of a request's rows, drawn at random (a larger request
is sampled, not dropped, and weighs no more than that in the comparison), and the other
server's answer may weigh at most ``ANSWER_BYTES_PER_ROW`` a row: it is read only that far,
and a longer one is a counted error, never parsed. So an answer of any size costs the
event loop at most the parsing of ~1 KB a row (a model server's record for one row is
~150 bytes), and the proxy's memory that much.

Nobody waits for a copy's answer, so a call goes out only once ``max_batch_rows`` rows are
queued or ``fill_s`` after the worker found copies waiting. The other model server's cost
is per call, not per row: sent as soon as the previous call returned, the copies of 64 busy
clients went ~39 rows a call, and that server took the CPU the live one needed on two cores.
"""

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable

from iris_core.shadow_evidence import ShadowCounts
from iris_core.table.models import answer_class

_logger = logging.getLogger(__name__)

MAX_QUEUED_ROWS = 4096
FILL_S = 0.1  # the longest a copy waits for company before its call goes out
COPY_ROWS = 64  # the most rows of one request a copy carries
ANSWER_BYTES_PER_ROW = 1024  # the most a copy's answer may weigh a row (plus ANSWER_BYTES_SLACK)
ANSWER_BYTES_SLACK = 4096


class ShadowScorer:
    """Scores copies on ``target`` and counts, per reference version, how its classes compare."""

    def __init__(
        self,
        target,
        session,
        *,
        rate: float,
        timeout: float,
        max_batch_rows: int = 256,
        max_queued_rows: int = MAX_QUEUED_ROWS,
        fill_s: float = FILL_S,
    ):
        self.target = target  # the Upstream that scores the copies
        self.rate = rate
        self.counts: dict[str, ShadowCounts] = {}  # reference version -> what the target answered beside it
        self.offered_requests = 0
        self.dropped_rows = 0  # copies refused because the queue was full
        self.incompatible_requests = 0  # requests not copied: the target reads other features
        self._session = session
        self._timeout = float(timeout)
        self._max_batch_rows = max_batch_rows
        self._max_queued_rows = max_queued_rows
        self._fill_s = fill_s
        self._queue: collections.deque[tuple[list, list, str]] = collections.deque()
        self._queued_rows = 0
        self._credit = 0.0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()  # max_batch_rows rows are queued
        self._task: asyncio.Task | None = None
        # called with (reference version, [(given class, target's class) per copied row]) for each answered copy
        self.on_compared: Callable[[str, list[tuple[str, str]]], None] | None = None
        self.on_dropped: Callable[[int], None] | None = None  # called with the rows of each dropped copy

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop sending; what is still queued is dropped (and counted)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._dropped(self._queued_rows)
        self._queue.clear()
        self._queued_rows = 0

    def offer(self, rows: list, predictions: list, reference: str) -> None:
        """A copy of one answered request (its rows, the answers given, the version that gave them), if sampled."""
        self._credit += self.rate
        if self._credit < 1.0:
            return
        self._credit -= 1.0
        self.offered_requests += 1
        if len(rows) > COPY_ROWS:
            chosen = sorted(_RANDOM.sample(range(len(rows)), COPY_ROWS))
            rows, predictions = [rows[i] for i in chosen], [predictions[i] for i in chosen]
        if self._queued_rows + len(rows) > self._max_queued_rows:
            self._dropped(len(rows))
            return
        self._queue.append((rows, predictions, reference))
        self._queued_rows += len(rows)
        self._wake.set()
        if self._queued_rows >= self._max_batch_rows:
            self._full.set()

    def _dropped(self, rows: int) -> None:
        self.dropped_rows += rows
        if rows and self.on_dropped is not None:
            self.on_dropped(rows)

    def counts_for(self, reference: str) -> ShadowCounts:
        counts = self.counts.get(reference)
        if counts is None:
            counts = self.counts[reference] = ShadowCounts(reference)
        return counts

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if self._queued_rows < self._max_batch_rows and self._fill_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self._fill_s)
                self._full.clear()
                await self._score(self._take())

    def _take(self) -> list[tuple[list, list, str]]:
        """Whole requests from the head, with the head's reference version, up to ``max_batch_rows`` rows."""
        batch = [self._queue.popleft()]
        rows, reference = len(batch[0][0]), batch[0][2]
        while self._queue and self._queue[0][2] == reference and rows + len(self._queue[0][0]) <= self._max_batch_rows:
            batch.append(self._queue.popleft())
            rows += len(batch[-1][0])
        self._queued_rows -= rows
        return batch

    async def _score(self, batch: list[tuple[list, list, str]]) -> None:
        rows = [row for request_rows, _, _ in batch for row in request_rows]
        given = [record for _, records, _ in batch for record in records]
        counts = self.counts_for(batch[0][2])
        started = time.perf_counter()
        limit = len(rows) * ANSWER_BYTES_PER_ROW + ANSWER_BYTES_SLACK
        try:
            answers = await asyncio.wait_for(
                self.target.score(self._session, rows, self._timeout, max_answer_bytes=limit), timeout=self._timeout
            )
            pairs = [(class_of(mine), class_of(theirs)) for mine, theirs in zip(given, answers, strict=True)]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failure of the other server is a counted error, never more
            _logger.debug("copy of %d rows to version %s failed: %s", len(rows), self.target.version, exc)
            pairs = None
        counts.observe_call((time.perf_counter() - started) * 1000, pairs, len(rows))
        if pairs is not None and self.on_compared is not None:
            start = 0
            for request_rows, _, reference in batch:
                self.on_compared(reference, pairs[start : start + len(request_rows)])
                start += len(request_rows)


_RANDOM = random.Random()


def class_of(answer) -> str:
    """The class an answer names, as compared and counted (at most 40 characters of it)."""
    return str(answer_class(answer))[:40]
