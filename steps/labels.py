"""Reading the labels the proxy's feedback log holds, joined with the predictions they belong to.

The I/O around ``steps.live_performance.join``: files that cannot be read end the step in
one line, unreadable lines are skipped and counted with one warning. The predictions are
read from the prediction log and every rotated file beside it (``PATH.N`` ... ``PATH.1``,
``PATH``), streamed once, since a label may come after its prediction was rotated away.
"""

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from iris_core.records import InvalidRecord, iter_lines, parse_feedback_line, parse_line, rotated_files
from steps.errors import InvalidParameter, StepError
from steps.live_performance import LabeledRows, join

_logger = logging.getLogger(__name__)


def feedback_path(feedback: str | None) -> Path | None:
    """The feedback log a parameter names; empty means none (MLflow passes "" for an unset parameter)."""
    if not feedback or not feedback.strip():
        return None
    path = Path(feedback.strip())
    if not path.is_file():
        raise InvalidParameter(f"feedback log {feedback!r} does not exist or is not a file")
    return path


def read_labels(feedback_files: Sequence[Path], predictions: str | Path) -> LabeledRows:
    """The labels of ``feedback_files`` (oldest first) joined with their predictions."""
    labels, skipped, first_skipped = [], 0, None
    for path in feedback_files:
        for item in _lines(path, parse_feedback_line, "feedback log"):
            if isinstance(item, InvalidRecord):
                skipped += 1
                first_skipped = first_skipped or f"{path.name} {item}"
            else:
                labels.append(item)
    if skipped:
        _logger.warning("Skipped %d unreadable lines of the feedback log (first: %s)", skipped, first_skipped)
    return join(labels, _predictions(rotated_files(predictions)), skipped)


def _predictions(files: list[Path]) -> Iterator[dict]:
    for path in files:
        for item in _lines(path, parse_line, "prediction log"):
            if not isinstance(item, InvalidRecord):
                yield item


def _lines(path: Path, parse, what: str):
    try:
        yield from iter_lines(path, parse)
    except OSError as exc:
        raise StepError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
