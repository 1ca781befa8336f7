"""Turn a ``POST /feedback`` body into labels, or into the one client error that names the bad item.

Pure functions, no I/O. A body is one item or a JSON array of items (at most
``max_items``); an item names a scored row by the ``X-Request-Id`` of its answer and,
for a request of several rows, the row's index, and gives its true class::

    {"request_id": "4f1c0a9e2b7d4c11", "row": 0, "label": "setosa"}

``row`` may be left out for a request of one row; ``label`` is a class as text or as a
number (``2``, or ``"virginica"``); whether it names a class of the version that answered
is checked against that version's contract (``serving.feedback.answers.judge``), where the classes
are known. Errors name the item and the field, never echo a value, and a list with one bad
item is refused whole.
"""

from dataclasses import dataclass

import orjson

from iris_core.records import MAX_LABEL, REQUEST_ID, REQUEST_ID_RULE
from iris_core.table.contract import label_text
from serving.errors import shorten
from serving.protocols.scoring import JSON_TYPE, ValidationError, media_type

_FIELDS = frozenset({"request_id", "row", "label"})
_LABEL_RULE = f"a class, as text of 1 to {MAX_LABEL} characters or as an integer"
MAX_ROW = 10**9  # far above any request's rows; keeps a row index a small integer


@dataclass(frozen=True, slots=True)
class Label:
    """The true class of one scored row, as the client wrote it (text); ``row`` is None when the item left it out."""

    request_id: str
    row: int | None
    label: str

    @property
    def key(self) -> tuple[str, int]:
        return self.request_id, self.row or 0


def parse_feedback(content_type: str | None, body: bytes, max_items: int) -> list[Label]:
    """The labels of a feedback body, in order; a ``ValidationError`` naming the first bad item otherwise."""
    if media_type(content_type) != JSON_TYPE:
        raise ValidationError(415, "UNSUPPORTED_MEDIA_TYPE", "/feedback takes application/json")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ValidationError(400, "MALFORMED_REQUEST", "the body is not valid JSON", [detail]) from None
    single = isinstance(document, dict)
    items = [document] if single else document
    if not isinstance(items, list):
        raise _invalid("the body must be a JSON object (one label) or an array of them")
    if not items:
        raise _invalid("the array holds no labels")
    if len(items) > max_items:
        raise ValidationError(413, "TOO_MANY_ITEMS", f"{len(items)} labels in one request; the limit is {max_items}")
    labels, seen = [], {}
    for index, item in enumerate(items):
        label = _label(item, "the label" if single else f"item {index}")
        if (earlier := seen.get(label.key)) is not None:
            raise _invalid(f"item {index}: labels the same row as item {earlier}")
        seen[label.key] = index
        labels.append(label)
    return labels


def _label(item, name: str) -> Label:
    if not isinstance(item, dict):
        raise _invalid(f"{name} must be an object with request_id, label and optionally row")
    if unknown := sorted(set(item) - _FIELDS):
        raise _invalid(f"{name}: unknown field {', '.join(repr(shorten(k, 40)) for k in unknown[:3])}")
    request_id = item.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise _invalid(f"{name}: request_id must be the X-Request-Id of an answer ({REQUEST_ID_RULE})")
    row = item.get("row")
    if row is not None and (not _is_int(row) or not 0 <= row <= MAX_ROW):
        raise _invalid(f"{name}: row must be the row's index in its request, an integer >= 0")
    if "label" not in item:
        raise _invalid(f"{name}: label is missing; give {_LABEL_RULE}")
    value = item["label"]
    if not (isinstance(value, str) or _is_int(value)):
        raise _invalid(f"{name}: label must be {_LABEL_RULE}")
    text = label_text(value)
    if not text or len(text) > MAX_LABEL:
        raise _invalid(f"{name}: label must be {_LABEL_RULE}")
    return Label(request_id, row, text)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(message: str) -> ValidationError:
    return ValidationError(400, "INVALID_FEEDBACK", message)
