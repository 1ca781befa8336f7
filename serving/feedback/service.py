"""``POST /feedback`` end to end: parse, check against the answer memory, log, count; and what it shows.

``serving.feedback.labels`` parses, ``serving.feedback.answers`` remembers and counts, and the feedback
log (``serving.feedback.log``) is the record, or, with ``--capture-uri``, the capture
(``serving.capture``), which keeps labels as the log does: synced to a journal on disk
before they count as written, and in the capture's store once their file closes. A request's labels are all accepted or all
refused: every item is checked before anything is logged or counted, and the answer waits
until the log's writer thread has them in the file (on the disk: it syncs), so a 200
means they are kept. A log that cannot take them (a full queue, a file that cannot be
written now or whose writes stopped returning, a write that fails) refuses them with 503
so the client sends them again; a failed write leaves nothing of them in the file. Only
a write not confirmed within ``WRITE_TIMEOUT_S`` is uncertain (a stalled disk may still
take it), and the 503 says so: sending the labels again is safe, since a row's first label
counts and later ones are duplicates. Labels count in live accuracy only once written.

Labels are taken at most as fast as the feedback log keeps them for a day
(``LabelBudget``): a token holder sending junk as fast as it can gets 429 with
``Retry-After`` once past it, instead of rotating every real label out of the log within
seconds. The bound is per proxy, not per client (they all hold the one token), so a flood
delays other clients' labels (refused, to be sent again) but cannot make them lost.

Metrics (collected at scrape time from the state kept here):

- ``proxy_live_labeled_rows_total{model,version}``, ``proxy_live_correct_rows_total{model,version}``:
  labeled rows of remembered answers since start, and how many the model got right;
- ``proxy_live_accuracy{model,version}`` and ``proxy_live_accuracy_window_rows{model,version}``: the
  share right among the latest ``--accuracy-window`` labeled rows, and how many rows that is;
- ``proxy_feedback_labels_total{outcome}``: accepted labels (``counted``, ``duplicate``,
  ``not_remembered``); ``proxy_feedback_requests_total{code}``: ``POST /feedback`` answers;
- ``proxy_answer_memory_requests``, ``proxy_answer_memory_rows``: what is remembered now;
- ``proxy_feedback_log_written_rows_total``, ``proxy_feedback_log_dropped_rows_total{reason}``,
  ``proxy_feedback_log_queued_rows`` and ``proxy_feedback_log_stalled``.
"""

import asyncio
import contextlib
import math
import time
from collections import defaultdict

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from iris_core.records import MAX_LABEL, encode, make_feedback_record
from serving.errors import HttpError
from serving.feedback.answers import AnswerMemory, LiveAccuracy, Outcome, count, judge
from serving.feedback.labels import parse_feedback
from serving.feedback.log import FeedbackLogWriter
from serving.files.log_writer import DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR
from serving.files.queue_metrics import PREFIX, log_queue_families

RETRY_AFTER_S = 5
WRITE_TIMEOUT_S = 5.0  # the longest a /feedback answer waits for its labels to be in the file
KEPT_FOR_S = 24 * 3600  # labels are taken no faster than the feedback log keeps this long
# a label's line with an empty request id, row 0 and an empty class; its id, row's digits and class add to it
_LABEL_BYTES = len(encode(make_feedback_record(ts="2026-01-01T00:00:00.000Z", request_id="", row=0, label="")))


def feedback_off() -> HttpError:
    return HttpError(
        404,
        "FEEDBACK_DISABLED",
        "feedback is off on this proxy: start it with --capture-uri URI, or with --prediction-log PATH and "
        "--feedback-log PATH",
    )


class FeedbackService:
    """The labels of one proxy: its answer memory, live accuracy and feedback log (or the capture's sink for them).

    ``writer`` is what keeps the labels when it is not the feedback log: the capture's
    ``serving.capture.recorder.CapturedLabels``, which shows its own metrics.
    """

    def __init__(self, config, registry, live=list, models: tuple[str, ...] = (), writer=None):
        self.live = live  # the live versions' serving.registry.model_facts.ModelFacts now, one per model served
        self.memory = AnswerMemory(config.answer_memory_rows)
        self.accuracy = LiveAccuracy(config.accuracy_window, models)
        self.max_items = config.max_rows
        self.requests: dict[int, int] = defaultdict(int)
        registry.register(self)
        self.writer = writer
        if writer is not None:  # the capture: no rotation pushes labels out, so no budget
            self.budget = None
            return
        self.budget = LabelBudget.of(config)
        self._written = Counter(
            f"{PREFIX}_feedback_log_written_rows", "Labels appended to the feedback log.", registry=registry
        )
        self._dropped = Counter(
            f"{PREFIX}_feedback_log_dropped_rows",
            "Labels the feedback log dropped, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in (DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR):
            self._dropped.labels(reason)
        self.writer = FeedbackLogWriter(
            config.feedback_log,
            max_bytes=config.log_max_bytes,
            backup_count=config.log_backups,
            on_written=self._written.inc,
            on_dropped=lambda reason, rows: self._dropped.labels(reason).inc(rows),
        )

    def remember(self, outcome) -> None:
        """The proxy's recorder hook: keep each answered request's classes by request id."""
        if outcome.predictions is not None:
            classes = outcome.facts.classes.of_answers(outcome.predictions)
            self.memory.remember(outcome.request_id, outcome.version, classes, outcome.facts, outcome.model)

    async def receive(self, content_type: str | None, body: bytes) -> dict:
        """Accept a feedback body whole once it is in the log, or raise the ``HttpError`` that refuses it whole."""
        labels = parse_feedback(content_type, body, self.max_items)
        if self.writer.failing or self.writer.stalled:
            raise _unavailable(f"the {self.writer.kind} cannot be written now; nothing was recorded")
        judged = judge(labels, self.memory, self.live())
        cost = sum(label_bytes(item.request_id, item.row, item.class_name) for item in judged)
        if self.budget is not None and (wait := self.budget.take(cost)):
            raise HttpError(
                429,
                "TOO_MANY_LABELS",
                f"labels are taken at most as fast as the feedback log keeps a day of them "
                f"({self.budget.rate:.0f} bytes/s); nothing was recorded, send them again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        try:
            return await self._log(judged)
        except HttpError:
            if self.budget is not None:
                self.budget.give_back(cost)
            raise

    async def _log(self, judged) -> dict:
        """Queue the labels, wait until the writer has them in the file, then count them."""
        loop = asyncio.get_running_loop()
        written = loop.create_future()

        def done(ok: bool) -> None:  # called from the writer thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(_settle, written, ok)

        labels = [(item.request_id, item.row, item.class_name, _version(item), _model(item)) for item in judged]
        if not self.writer.submit(labels, done):
            raise _unavailable(f"the {self.writer.kind} is behind; nothing was recorded")
        try:
            kept = await asyncio.wait_for(written, WRITE_TIMEOUT_S)
        except TimeoutError:
            raise _unavailable(
                f"the {self.writer.kind} did not confirm the write within {WRITE_TIMEOUT_S:g} s, so the labels may or "
                "may not be kept (a row's first label counts, so sending them again is safe)"
            ) from None
        if not kept:
            raise _unavailable(f"the {self.writer.kind} cannot be written now; nothing was recorded")
        outcomes = count(judged, self.accuracy)
        return {"accepted": len(judged), **{outcome.value: n for outcome, n in outcomes.items()}}

    def answered(self, status: int) -> None:
        self.requests[status] += 1

    def health(self) -> dict:
        return {
            "log": self.writer.health(),
            "memory": {"requests": len(self.memory), "rows": self.memory.rows, "max_rows": self.memory.max_rows},
            "live_accuracy": self.accuracy.as_dict(),
        }

    # -- the collector: called by prometheus_client at scrape time ---------------------------

    def describe(self):
        return []

    def collect(self):
        tallies = sorted(self.accuracy.tallies.items())
        families = {
            "labeled": CounterMetricFamily(
                f"{PREFIX}_live_labeled_rows",
                "Labeled rows of remembered answers, by the model and version that answered.",
                labels=["model", "version"],
            ),
            "correct": CounterMetricFamily(
                f"{PREFIX}_live_correct_rows",
                "Labeled rows the model version got right.",
                labels=["model", "version"],
            ),
            "accuracy": GaugeMetricFamily(
                f"{PREFIX}_live_accuracy",
                "Share of correct rows among the version's latest labeled rows (see _window_rows).",
                labels=["model", "version"],
            ),
            "window": GaugeMetricFamily(
                f"{PREFIX}_live_accuracy_window_rows",
                f"Labeled rows proxy_live_accuracy covers (at most {self.accuracy.window}).",
                labels=["model", "version"],
            ),
        }
        for (model, version), tally in tallies:
            families["labeled"].add_metric([model, version], tally.labeled)
            families["correct"].add_metric([model, version], tally.correct)
            families["accuracy"].add_metric([model, version], tally.window_accuracy)
            families["window"].add_metric([model, version], tally.window_rows)
        yield from families.values()
        outcomes = CounterMetricFamily(
            f"{PREFIX}_feedback_labels", "Accepted labels, by what became of them.", labels=["outcome"]
        )
        for outcome in Outcome:
            outcomes.add_metric([outcome.value], self.accuracy.outcomes[outcome])
        yield outcomes
        requests = CounterMetricFamily(
            f"{PREFIX}_feedback_requests", "POST /feedback requests answered, by status code.", labels=["code"]
        )
        for code, n in sorted(self.requests.items()):
            requests.add_metric([str(code)], n)
        yield requests
        yield GaugeMetricFamily(
            f"{PREFIX}_answer_memory_requests", "Answered requests remembered for feedback.", value=len(self.memory)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_answer_memory_rows", "Rows of the remembered requests.", value=self.memory.rows
        )
        if isinstance(self.writer, FeedbackLogWriter):
            yield from log_queue_families("feedback_log", "feedback log", self.writer)


def _version(item) -> str | None:
    """The version whose answer a label names, when the memory still holds it."""
    return item.answer.version if item.answer is not None else None


def _model(item) -> str | None:
    """The served model whose answer a label names, when the memory still holds it."""
    return item.answer.model or None if item.answer is not None else None


def label_bytes(request_id: str, row: int, class_name: str) -> int:
    """What one label's line weighs in the feedback log."""
    return _LABEL_BYTES + len(request_id) + len(str(row)) - 1 + len(class_name.encode())


class LabelBudget:
    """Bytes of labels the feedback log may take: refilled at ``rate`` a second, holding at most ``capacity``.

    A token bucket: the log keeps ``log_max_bytes * (log_backups + 1)`` bytes, so at ``rate``
    that retention lasts ``KEPT_FOR_S`` at least (less one full bucket); the bucket holds one
    request's worth at the row limit, so the largest request allowed always fits.
    """

    def __init__(self, rate: float, capacity: float, clock=time.monotonic):
        self.rate, self.capacity, self._clock = rate, capacity, clock
        self._level, self._at = capacity, clock()

    @classmethod
    def of(cls, config) -> "LabelBudget | None":
        """None when the feedback log never rotates (``--log-max-bytes 0``): no label is ever flushed out."""
        if not config.log_max_bytes:
            return None
        retention = config.log_max_bytes * (config.log_backups + 1)
        longest = label_bytes("x" * 128, config.max_rows, "x" * MAX_LABEL)
        return cls(retention / KEPT_FOR_S, config.max_rows * longest)

    def take(self, n: int) -> float:
        """Take ``n`` bytes and answer 0, or take nothing and answer the seconds until they are there."""
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now
        if n <= self._level:
            self._level -= n
            return 0.0
        return (n - self._level) / self.rate

    def give_back(self, n: int) -> None:
        self._level = min(self.capacity, self._level + n)


def _settle(future: asyncio.Future, kept: bool) -> None:
    if not future.done():
        future.set_result(kept)


def _unavailable(message: str) -> HttpError:
    return HttpError(
        503, "FEEDBACK_LOG_UNAVAILABLE", f"{message}; send it again later", headers={"Retry-After": str(RETRY_AFTER_S)}
    )
