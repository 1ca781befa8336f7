"""A capture read as the steps read the proxy's logs: the live rows of one version, and labels joined with predictions.

The files are ``steps.monitoring.capture_source``'s, the window ``steps.monitoring.window``'s, the join
``steps.monitoring.live_performance``'s, so a capture and a JSON-lines log give the same verdicts
for the same traffic. One pass over the window's predictions does both jobs:

- the rows of the checked version (and those that name no registry version, which count as
  it, as in ``steps.monitoring.drift.live_rows``) become the live frame, column by column, without a
  Python object per row; other versions' rows are only counted;
- the labels come first (from the window's start up to now: they come late), each row's
  first label kept; only the predictions whose request a label names become records for
  the join, so a label finds its prediction whichever replica answered and whichever file
  holds it, and memory holds the window's labels, never the whole capture's.
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from iris_core.capture import FEEDBACK, PREDICTIONS
from iris_core.records import timestamp
from steps.monitoring.capture_source import CaptureSource
from steps.monitoring.drift import LIVE_COLUMNS, LiveRows
from steps.monitoring.live_performance import LabeledRows, first_labels, join_first
from steps.monitoring.window import Window

PREDICTION_COLUMNS = ["ts", "request_id", "row", "model_version", "features", "prediction", "confidence"]
FEEDBACK_COLUMNS = ["ts", "request_id", "row", "label"]


@dataclass(frozen=True)
class CaptureRead:
    live: LiveRows | None  # None when no version was checked (retrain)
    labeled: LabeledRows | None  # None without a feedback source
    files: int  # prediction files read


def read_capture(
    predictions: CaptureSource,
    model: str,
    window: Window,
    version: str | None = None,
    features: tuple[str, ...] = (),
    feedback: CaptureSource | None = None,
) -> CaptureRead:
    """The window's live rows of ``version`` (with its ``features``), and the labels of ``feedback`` joined."""
    wanted, read, duplicates, skipped, ids = {}, 0, 0, 0, None
    if feedback is not None:
        labels = _labels(feedback, model, window.labels())
        wanted, read, duplicates = first_labels(labels)
        skipped = labels.skipped
        ids = pa.array(sorted({request_id for request_id, _ in wanted}), pa.string())
    files = predictions.files(PREDICTIONS, model, window)
    live = _LiveColumns(model, version, features) if version is not None else None
    records = _predictions(predictions, files, model, window, live, ids)
    if feedback is not None:
        labeled = join_first(wanted, read, duplicates, records, skipped)
    else:
        labeled = None
        for _ in records:
            pass
    return CaptureRead(live.rows() if live is not None else None, labeled, len(files))


class _Labels:
    """The labels of the feedback files, as records ``join`` reads; ``skipped`` counts those that are none."""

    def __init__(self, rows: Iterator[dict]):
        self._rows = rows
        self.skipped = 0

    def __iter__(self):
        for label in self._rows:
            if label["request_id"] is None or label["row"] is None or not label["label"]:
                self.skipped += 1
                continue
            yield label


def _labels(source: CaptureSource, model: str, window: Window) -> _Labels:
    files = source.files(FEEDBACK, model, window, required=False)

    def rows():
        for _, table in source.tables(files, FEEDBACK_COLUMNS):
            for label in _in_window(table, window).to_pylist():
                label["ts"] = timestamp(label["ts"].timestamp()) if label["ts"] is not None else None
                yield label

    return _Labels(rows())


def _in_window(table: pa.Table, window: Window) -> pa.Table:
    """The rows of a table whose ``ts`` is inside the window."""
    if window.whole:
        return table
    ts = pc.cast(table["ts"], pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    keep = None
    if window.since is not None:
        keep = pc.greater_equal(ts, int(window.since * 1000))
    if window.until is not None:
        before = pc.less(ts, int(window.until * 1000))
        keep = before if keep is None else pc.and_(keep, before)
    return table.filter(keep)


class _LiveColumns:
    """The live frame of one version, gathered a file at a time as Arrow columns."""

    def __init__(self, model: str, version: str, features: tuple[str, ...]):
        self.model, self.version, self.features = model, version, tuple(features)
        self.tables: list[pa.Table] = []
        self.others: Counter = Counter()
        self.incomplete = 0

    def add(self, partition_version: str, table: pa.Table) -> None:
        if partition_version.isdigit() and partition_version != self.version:
            self.others[f"{self.model}/{partition_version}"] += table.num_rows
            return
        struct = table["features"].combine_chunks()
        fields = {struct.type.field(i).name for i in range(struct.type.num_fields)}
        if not set(self.features) <= fields:
            self.incomplete += table.num_rows  # rows of the version that lack one of its features
            return
        columns = {name: pc.struct_field(struct, name) for name in self.features}
        complete = None
        for column in columns.values():
            valid = pc.is_valid(column)
            complete = valid if complete is None else pc.and_(complete, valid)
        part = pa.table(
            {
                **columns,
                "prediction": table["prediction"].combine_chunks(),
                "confidence": table["confidence"].combine_chunks(),
                "ts": table["ts"].combine_chunks(),
            }
        )
        if complete is not None:
            kept = part.filter(complete)
            self.incomplete += part.num_rows - kept.num_rows
            part = kept
        self.tables.append(part)

    def rows(self) -> LiveRows:
        if self.tables:
            frame = pa.concat_tables(self.tables).to_pandas()
        else:
            frame = pd.DataFrame(columns=[*self.features, *LIVE_COLUMNS])
        frame = frame.astype({name: "float64" for name in self.features})
        frame["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce").astype("float64")
        return LiveRows(frame, 0, dict(sorted(self.others.items())), self.incomplete)


def _predictions(
    source: CaptureSource, files, model: str, window: Window, live: _LiveColumns | None, ids: pa.Array | None
) -> Iterator[dict]:
    """One pass over the window's prediction files: the live columns gathered, and the records labels name yielded."""
    for file, table in source.tables(files, PREDICTION_COLUMNS):
        table = _in_window(table, window)
        if live is not None:
            live.add(file.partition.version, table)
        if ids is None or not len(ids):
            continue
        for record in table.filter(pc.is_in(table["request_id"], value_set=ids)).to_pylist():
            record["ts"] = timestamp(record["ts"].timestamp()) if record["ts"] is not None else None
            record["model_name"] = model
            record["features"] = record["features"] or {}
            yield record
