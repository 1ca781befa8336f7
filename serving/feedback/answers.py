"""What the proxy remembers of its recent answers, and the live accuracy the labels sent back for them give.

Pure and single-threaded (the proxy's event loop calls everything here). The memory is a
fast path, not the record: it holds the predicted class of each row of the latest
requests, at most ``max_rows`` rows, oldest forgotten first. A label for a request it
still remembers is scored at once, per model version; a label for one it has forgotten
(or never saw: another replica's, or from before a restart) is only counted as not
remembered, and the ``monitor`` step joins it with the prediction log later. A row's
first label counts; later ones for the same row are duplicates, here and in the step.

Accuracy per version is kept two ways: counts since the proxy started, and the share of
correct rows among the latest ``window`` labeled rows, so a fall shows without waiting
for a long history to dilute.
"""

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from serving.feedback.labels import Label
from serving.protocols.scoring import ValidationError


@dataclass(slots=True)
class Answer:
    """One remembered request: the version that answered, the class it gave each row, and what that version is."""

    version: str
    classes: bytes
    labeled: bytearray  # 1 for each row whose label has counted
    facts: object = None  # the version's serving.registry.model_facts.ModelFacts: its classes judge the labels
    model: str = ""  # the served model the version is of


class AnswerMemory:
    """The latest answers by request id, bounded in rows; the oldest requests are forgotten first."""

    def __init__(self, max_rows: int):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.max_rows = max_rows
        self.rows = 0
        self._answers: collections.OrderedDict[str, Answer] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, request_id: str, version: str, classes: bytes, facts=None, model: str = "") -> None:
        """Keep one answer; a request id seen again (a client reusing its own) now names the new answer.

        A label names a row by request id and index, so the rows of the earlier answer that
        were labeled stay labeled: a reused id never makes one row count twice, here as in
        the ``monitor`` step, where a row's first label counts.
        """
        if len(classes) > self.max_rows:
            return
        labeled = bytearray(len(classes))
        previous = self._answers.pop(request_id, None)
        if previous is not None:
            self.rows -= len(previous.classes)
            kept = min(len(classes), len(previous.labeled))
            labeled[:kept] = previous.labeled[:kept]
        self._answers[request_id] = Answer(version, classes, labeled, facts, model)
        self.rows += len(classes)
        while self.rows > self.max_rows:
            _, forgotten = self._answers.popitem(last=False)
            self.rows -= len(forgotten.classes)

    def recall(self, request_id: str) -> Answer | None:
        return self._answers.get(request_id)


@dataclass
class VersionAccuracy:
    """Labeled and correct rows of one version: since start, and over the latest ``window`` labeled rows."""

    window: int
    labeled: int = 0
    correct: int = 0
    window_correct: int = 0
    latest: collections.deque = field(default_factory=collections.deque)

    def count(self, correct: bool) -> None:
        self.labeled += 1
        self.correct += correct
        self.latest.append(correct)
        self.window_correct += correct
        if len(self.latest) > self.window:
            self.window_correct -= self.latest.popleft()

    @property
    def window_rows(self) -> int:
        return len(self.latest)

    @property
    def window_accuracy(self) -> float | None:
        return self.window_correct / len(self.latest) if self.latest else None

    def as_dict(self) -> dict:
        return {
            "labeled_rows": self.labeled,
            "correct_rows": self.correct,
            "window_rows": self.window_rows,
            "window_correct_rows": self.window_correct,
            "accuracy": self.window_accuracy,
        }


class Outcome(StrEnum):
    """What became of one accepted label."""

    COUNTED = "counted"  # its request was remembered: it counts for the version that answered
    DUPLICATE = "duplicate"  # its row had a label already: logged, not counted again
    NOT_REMEMBERED = "not_remembered"  # its request is no longer (or never was) in memory: logged only


class LiveAccuracy:
    """Live accuracy per model and version, from labels of remembered answers."""

    def __init__(self, window: int, models: tuple[str, ...] = ()):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.models = models  # the models served: /health shows each one's versions apart when there are several
        self.tallies: dict[tuple[str, str], VersionAccuracy] = {}  # (model, version) -> its tally
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    @property
    def versions(self) -> dict[str, VersionAccuracy]:
        """The tallies by version, of the first model (of the only one, usually)."""
        first = self.models[0] if self.models else ""
        return {version: tally for (model, version), tally in self.tallies.items() if model == first}

    def count(self, version: str, correct: bool, model: str = "") -> None:
        tally = self.tallies.get((model, version))
        if tally is None:
            tally = self.tallies[(model, version)] = VersionAccuracy(self.window)
        tally.count(correct)

    def as_dict(self) -> dict:
        body: dict = {"window": self.window}
        if len(self.models) > 1:
            body["models"] = {
                model: {
                    version: tally.as_dict() for (name, version), tally in sorted(self.tallies.items()) if name == model
                }
                for model in self.models
            }
        else:
            body["versions"] = {version: tally.as_dict() for version, tally in sorted(self.versions.items())}
        body["labels"] = {outcome.value: n for outcome, n in self.outcomes.items()}
        return body


@dataclass(frozen=True, slots=True)
class Judged:
    """A label checked against the memory: the row it names, its class, and the answer it belongs to if remembered.

    ``label`` is the class's index in the answering version's ``ClassIndex`` (None when
    the answer is not remembered); ``class_name`` what the feedback log records.
    """

    request_id: str
    row: int
    label: int | None
    class_name: str
    answer: Answer | None


def judge(labels: Sequence[Label], memory: AnswerMemory, live: Sequence = ()) -> list[Judged]:
    """Check every label against the memory before any counts: a row a remembered request lacks, or a label that
    names no class of the version that answered, is a 400.

    A label of a request no longer (or never) remembered must name a class of a live
    version (``live``: their facts, one per model served) when every one lists its
    classes: it is logged, and the steps join it with its prediction later.
    """
    listed = [facts for facts in live if facts is not None]
    closed = bool(listed) and all(facts.contract.classes for facts in listed)
    judged = []
    for index, label in enumerate(labels):
        name = "the label" if len(labels) == 1 else f"item {index}"
        answer = memory.recall(label.request_id)
        row = label.row
        class_name, number = label.label, None
        if answer is None and closed:
            class_name = next((c for facts in listed if (c := facts.contract.class_of(label.label))), None)
            if class_name is None:
                shown = ", ".join(dict.fromkeys(c for facts in listed for c in facts.contract.classes[:10]))
                raise _invalid(f"{name}: the label is not a class of the model ({shown})")
        if answer is not None:
            rows = len(answer.classes)
            if row is None and rows > 1:
                raise _invalid(f"{name}: its request scored {rows} rows; give row (0 to {rows - 1})")
            if row is not None and row >= rows:
                raise _invalid(
                    f"{name}: its request scored {rows} row{'s' if rows > 1 else ''}; row must be 0 to {rows - 1}"
                )
            facts = answer.facts
            if facts is not None:
                class_name = facts.contract.class_of(label.label)
                if class_name is None:
                    shown = ", ".join(facts.contract.classes[:10])
                    raise _invalid(f"{name}: the label is not a class of version {answer.version} ({shown})")
                number = facts.classes.index(class_name)
        judged.append(Judged(label.request_id, row or 0, number, class_name, answer))
    return judged


def count(judged: Sequence[Judged], accuracy: LiveAccuracy) -> dict[Outcome, int]:
    """Count judged labels (all of them accepted): per version when remembered, else as not remembered."""
    outcomes = dict.fromkeys(Outcome, 0)
    for item in judged:
        answer = item.answer
        if answer is None:
            outcome = Outcome.NOT_REMEMBERED
        elif answer.labeled[item.row]:
            outcome = Outcome.DUPLICATE
        else:
            answer.labeled[item.row] = 1
            accuracy.count(answer.version, answer.classes[item.row] == item.label, answer.model)
            outcome = Outcome.COUNTED
        outcomes[outcome] += 1
        accuracy.outcomes[outcome] += 1
    return outcomes


def _invalid(message: str) -> ValidationError:
    return ValidationError(400, "INVALID_FEEDBACK", message)
