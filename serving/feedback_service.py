"""``POST /feedback`` end to end: parse, check against the answer memory, log, count; and what it shows.

``serving.feedback`` parses, ``serving.answers`` remembers and counts, and the feedback
log (``serving.feedback_log``) is the record. A request's labels are all accepted or all
refused: every item is checked before anything is logged or counted, and a log that
cannot take them (a full queue, or a file that cannot be written now) refuses them with
503 so the client sends them again, instead of answering 200 for labels that are lost.
Runs on the event loop; nothing here awaits, so the memory cannot change between the
check and the count.

Metrics (collected at scrape time from the state kept here):

- ``proxy_live_labeled_rows_total{version}``, ``proxy_live_correct_rows_total{version}``:
  labeled rows of remembered answers since start, and how many the model got right;
- ``proxy_live_accuracy{version}`` and ``proxy_live_accuracy_window_rows{version}``: the
  share right among the latest ``--accuracy-window`` labeled rows, and how many rows that is;
- ``proxy_feedback_labels_total{outcome}``: accepted labels (``counted``, ``duplicate``,
  ``not_remembered``); ``proxy_feedback_requests_total{code}``: ``POST /feedback`` answers;
- ``proxy_answer_memory_requests``, ``proxy_answer_memory_rows``: what is remembered now;
- ``proxy_feedback_log_written_rows_total``, ``proxy_feedback_log_dropped_rows_total{reason}``.
"""

from collections import defaultdict

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.answers import AnswerMemory, LiveAccuracy, Outcome, count, judge
from serving.errors import HttpError
from serving.feedback import parse_feedback
from serving.feedback_log import FeedbackLogWriter
from serving.log_writer import DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR

PREFIX = "proxy"
RETRY_AFTER_S = 5


def feedback_off() -> HttpError:
    return HttpError(
        404,
        "FEEDBACK_DISABLED",
        "feedback is off on this proxy: start it with --prediction-log PATH and --feedback-log PATH",
    )


class FeedbackService:
    """The labels of one proxy: its answer memory, live accuracy and feedback log."""

    def __init__(self, config, registry):
        self.memory = AnswerMemory(config.answer_memory_rows)
        self.accuracy = LiveAccuracy(config.accuracy_window)
        self.max_items = config.max_rows
        self.requests: dict[int, int] = defaultdict(int)
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
        registry.register(self)

    def remember(self, outcome) -> None:
        """The proxy's recorder hook: keep each answered request's classes by request id."""
        if outcome.predictions is not None:
            classes = outcome.facts.classes.of_answers(outcome.predictions)
            self.memory.remember(outcome.request_id, outcome.version, classes, outcome.facts)

    def receive(self, content_type: str | None, body: bytes) -> dict:
        """Accept a feedback body whole, or raise the ``HttpError`` that refuses it whole."""
        labels = parse_feedback(content_type, body, self.max_items)
        if self.writer.failing:
            raise _unavailable("the feedback log cannot be written now; nothing was recorded")
        judged = judge(labels, self.memory)
        if not self.writer.submit([(item.request_id, item.row, item.class_name) for item in judged]):
            raise _unavailable("the feedback log is behind; nothing was recorded")
        outcomes = count(judged, self.accuracy)
        return {"accepted": len(judged), **{outcome.value: n for outcome, n in outcomes.items()}}

    def answered(self, status: int) -> None:
        self.requests[status] += 1

    def health(self) -> dict:
        return {
            "log": {"path": str(self.writer.path), "state": "failing" if self.writer.failing else "ok"},
            "memory": {"requests": len(self.memory), "rows": self.memory.rows, "max_rows": self.memory.max_rows},
            "live_accuracy": self.accuracy.as_dict(),
        }

    # -- the collector: called by prometheus_client at scrape time ---------------------------

    def describe(self):
        return []

    def collect(self):
        versions = list(self.accuracy.versions.items())
        families = {
            "labeled": CounterMetricFamily(
                f"{PREFIX}_live_labeled_rows",
                "Labeled rows of remembered answers, by the model version that answered.",
                labels=["version"],
            ),
            "correct": CounterMetricFamily(
                f"{PREFIX}_live_correct_rows",
                "Labeled rows the model version got right.",
                labels=["version"],
            ),
            "accuracy": GaugeMetricFamily(
                f"{PREFIX}_live_accuracy",
                "Share of correct rows among the version's latest labeled rows (see _window_rows).",
                labels=["version"],
            ),
            "window": GaugeMetricFamily(
                f"{PREFIX}_live_accuracy_window_rows",
                f"Labeled rows proxy_live_accuracy covers (at most {self.accuracy.window}).",
                labels=["version"],
            ),
        }
        for version, tally in versions:
            families["labeled"].add_metric([version], tally.labeled)
            families["correct"].add_metric([version], tally.correct)
            families["accuracy"].add_metric([version], tally.window_accuracy)
            families["window"].add_metric([version], tally.window_rows)
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


def _unavailable(message: str) -> HttpError:
    return HttpError(
        503, "FEEDBACK_LOG_UNAVAILABLE", f"{message}; send it again later", headers={"Retry-After": str(RETRY_AFTER_S)}
    )
