"""The open files of a capture, held column by column, and the Parquet tables they become when they close.

An open predictions file lives in memory: per request, its time, id, latency and row count
once, and per row its feature values (the request's own row lists, not copies) and the
class and confidence read from the model's answer (``iris_core.table.models``). Only when
the file closes are the request-level values repeated per row and everything turned into
Arrow columns: the event loop never pays for it, and the writer thread pays once per row.

Labels are never held here: they go to a journal on disk before the client hears they are
kept (``serving.capture.spool``), and become a table from its lines when their file closes.
The column formats are ``iris_core.records``'s (``FIELDS``, ``FEEDBACK_FIELDS``), as
``iris_core.capture`` lays them out.
"""

from array import array
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from iris_core.capture import Partition
from iris_core.table.models import answer_class, answer_confidence

TIMESTAMP = pa.timestamp("ms", tz="UTC")


class OpenPredictions:
    """The rows of one predictions file not yet closed: one partition, one list of feature names.

    Feature values and confidences go into flat arrays of doubles (8 bytes a value, not a
    Python float's 32), class names are kept once each: what the open file holds in memory
    is about 50 bytes a row beside a few per request.
    """

    __slots__ = (
        "partition",
        "names",
        "opened",
        "rows",
        "_epochs",
        "_request_ids",
        "_latencies",
        "_counts",
        "_versions",
        "_values",
        "_classes",
        "_known_classes",
        "_confidences",
    )

    def __init__(self, partition: Partition, names: Sequence[str], opened: float):
        self.partition = partition
        self.names = tuple(names)
        self.opened = opened  # monotonic seconds: the file closes after --capture-file-seconds
        self.rows = 0
        self._epochs = array("d")
        self._request_ids: list[str] = []
        self._latencies = array("d")
        self._counts = array("q")
        self._versions: list[str | None] = []
        self._values = array("d")  # row after row, in the order of names
        self._classes: list[str] = []
        self._known_classes: dict[str, str] = {}
        self._confidences = array("d")  # NaN for an answer without one

    def add(
        self, epoch: float, request_id: str, version: str | None, rows: Sequence, predictions: Sequence, latency_ms
    ):
        """One answered request's rows (sequences in the order of ``names``, or dicts); a ValueError or TypeError,
        and nothing kept, when they do not fit."""
        width, values, start = len(self.names), self._values, len(self._values)
        try:
            for row in rows:
                values.extend([row[name] for name in self.names] if isinstance(row, Mapping) else row)
            if len(values) - start != width * len(rows) or len(predictions) != len(rows):
                raise ValueError("rows and names do not fit")
        except BaseException:
            del values[start:]
            raise
        known, classes, confidences = self._known_classes, self._classes, self._confidences
        for output in predictions:
            name = str(answer_class(output))
            classes.append(known.setdefault(name, name))
            confidence = answer_confidence(output)
            confidences.append(float("nan") if confidence is None else confidence)
        self._epochs.append(epoch)
        self._request_ids.append(request_id)
        self._latencies.append(latency_ms)
        self._counts.append(len(rows))
        self._versions.append(version)
        self.rows += len(rows)

    def table(self) -> pa.Table:
        counts = np.frombuffer(self._counts, dtype=np.int64) if self._counts else np.zeros(0, np.int64)
        ends = np.cumsum(counts)
        starts = np.repeat(ends - counts, counts)
        millis = np.round(_doubles(self._epochs) * 1000).astype(np.int64)
        matrix = _doubles(self._values).reshape(self.rows, len(self.names))
        features = pa.StructArray.from_arrays(
            [pa.array(matrix[:, index]) for index in range(len(self.names))], names=list(self.names)
        )
        confidences = _doubles(self._confidences)
        per_row = lambda values: np.repeat(np.asarray(values, dtype=object), counts)  # noqa: E731
        return pa.table(
            {
                "ts": pa.array(np.repeat(millis, counts), TIMESTAMP),
                "request_id": pa.array(per_row(self._request_ids), pa.string()),
                "row": pa.array(np.arange(self.rows, dtype=np.int64) - starts, pa.int32()),
                "model_name": pa.array([self.partition.model] * self.rows, pa.string()),
                "model_version": pa.array(per_row(self._versions), pa.string()),
                "features": features,
                "prediction": pa.array(self._classes, pa.string()),
                "confidence": pa.array(confidences, pa.float64(), mask=np.isnan(confidences)),
                "latency_ms": pa.array(np.repeat(_doubles(self._latencies), counts), pa.float32()),
            }
        )


def _doubles(values: array) -> np.ndarray:
    return np.frombuffer(values, dtype=np.float64) if len(values) else np.zeros(0, np.float64)


def feedback_table(labels: Iterable[dict]) -> pa.Table:
    """The labels of one partition (journal entries: ``ts`` in epoch seconds, ``request_id``, ``row``, ``label``,
    ``model_name``, ``model_version``) as a table."""
    labels = list(labels)
    return pa.table(
        {
            "ts": pa.array([round(label["ts"] * 1000) for label in labels], TIMESTAMP),
            "request_id": pa.array([label["request_id"] for label in labels], pa.string()),
            "row": pa.array([label["row"] for label in labels], pa.int32()),
            "label": pa.array([label["label"] for label in labels], pa.string()),
            "model_name": pa.array([label["model_name"] for label in labels], pa.string()),
            "model_version": pa.array([label["model_version"] for label in labels], pa.string()),
        }
    )
