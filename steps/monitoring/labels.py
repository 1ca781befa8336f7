"""Reading the labels the proxy's feedback log holds, joined with the predictions they belong to.

The I/O around ``steps.monitoring.live_performance.join``: files that cannot be read end the step in
one line, unreadable lines are skipped and counted with one warning. The predictions are
read from the prediction log and every rotated file beside it (``PATH.N`` ... ``PATH.1``,
``PATH``), streamed once, since a label may come after its prediction was rotated away.
A directory stands for every log of its kind beneath it: one per serving replica.

What a step's ``--predictions`` and ``--feedback`` name is either such a log or a capture
(``iris_core.capture``), which ``steps.monitoring.capture_reading`` reads; ``predictions_path`` and
``feedback_path`` tell them apart and check what can be checked before a run starts.
"""

import logging
from collections.abc import Iterator
from pathlib import Path

from iris_core.capture import is_capture
from iris_core.records import (
    FEEDBACK_LOG_NAME,
    PREDICTION_LOG_NAME,
    InvalidRecord,
    all_logs,
    current_logs,
    iter_lines,
    parse_feedback_line,
    parse_line,
)
from steps.common.errors import InvalidParameter, StepError
from steps.monitoring.live_performance import LabeledRows, join
from steps.monitoring.window import WHOLE, Window, window_of

_logger = logging.getLogger(__name__)


def locate(
    predictions: str, feedback: str | None, since: str, until: str, hours: str
) -> tuple[Window, Path | str, Path | str | None]:
    """What a step's ``--predictions``, ``--feedback`` and window options name, each checked: the window, then
    where the predictions and the labels are."""
    window = window_of(since, until, hours)
    predictions = predictions_path(predictions, window)
    return window, predictions, feedback_path(feedback, predictions)


def predictions_path(predictions: str, window: Window = WHOLE) -> Path | str:
    """The prediction log (or directory of them) a parameter names, or the capture's location as given; a window
    is for a capture only (a log is read whole)."""
    text = (predictions or "").strip()
    if not text:
        raise InvalidParameter("--predictions must name a capture or a prediction log")
    if is_capture(text):
        return text
    if not window.whole:
        raise InvalidParameter("--since, --until and --hours choose a window of a capture; a log is read whole")
    path = Path(text)
    if not path.exists():
        raise InvalidParameter(f"prediction log {text!r} does not exist")
    return path


def feedback_path(feedback: str | None, predictions: Path | str | None = None) -> Path | str | None:
    """The feedback log (or directory of them) a parameter names, or a capture's location; empty means none (MLflow
    passes ""). Labels of a capture are joined with a capture's predictions, a log's with a log's."""
    if not feedback or not feedback.strip():
        return None
    if is_capture(feedback.strip()):
        if predictions is not None and not isinstance(predictions, str):
            raise InvalidParameter("--feedback names a capture: give --predictions a capture too")
        return feedback.strip()
    if isinstance(predictions, str):
        raise InvalidParameter("--predictions names a capture: give --feedback the capture too (or nothing)")
    path = Path(feedback.strip())
    if not path.exists():
        raise InvalidParameter(f"feedback log {feedback!r} does not exist")
    if path.is_dir() and not current_logs(path, FEEDBACK_LOG_NAME):
        raise InvalidParameter(f"no {FEEDBACK_LOG_NAME} in the directory {feedback!r}")
    return path


def read_labels(feedback: Path, predictions: str | Path, rotated: bool = False) -> LabeledRows:
    """The labels of the feedback log(s) ``feedback`` names (with their rotated files when ``rotated``), joined
    with their predictions in every prediction log ``predictions`` names and the rotated files of each."""
    files = all_logs(feedback, FEEDBACK_LOG_NAME) if rotated else current_logs(feedback, FEEDBACK_LOG_NAME)
    labels, skipped, first_skipped = [], 0, None
    for path in files:
        for item in _lines(path, parse_feedback_line, "feedback log"):
            if isinstance(item, InvalidRecord):
                skipped += 1
                first_skipped = first_skipped or f"{path.name} {item}"
            else:
                labels.append(item)
    if skipped:
        _logger.warning("Skipped %d unreadable lines of the feedback log (first: %s)", skipped, first_skipped)
    return join(labels, _predictions(all_logs(predictions, PREDICTION_LOG_NAME)), skipped)


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
