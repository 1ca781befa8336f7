"""The feedback log: its record format, shared rotation and drop counting, and what readers make of bad lines."""

import orjson

from iris_core.records import (
    FEEDBACK_FIELDS,
    encode,
    make_feedback_record,
    make_record,
    parse_line,
    read_feedback_log,
    read_log,
    rotated_files,
)
from iris_core.table.iris import IRIS
from serving.feedback.log import FeedbackLogWriter
from serving.files.log_writer import DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR
from serving.observability.prediction_log import PredictionLogWriter
from tests.helpers.log_writers import Tally, submit
from tests.helpers.support import wait_until

FEATURES = IRIS.feature_names

LABELS = [("req-1", 0, "setosa"), ("req-1", 1, "virginica")]


def test_each_label_becomes_one_line_in_the_documented_format_and_reads_back(tmp_path):
    path = tmp_path / "feedback.jsonl"
    tally = Tally()
    writer = FeedbackLogWriter(path, on_written=tally.on_written).start()
    assert writer.submit(LABELS)
    writer.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [tuple(line) for line in lines] == [FEEDBACK_FIELDS, FEEDBACK_FIELDS]
    assert [(r["request_id"], r["row"], r["label"]) for r in lines] == LABELS
    assert lines[0]["ts"].endswith("Z") and tally.written == 2
    assert read_feedback_log(path).records == lines


def test_prediction_records_name_their_row_in_the_request(tmp_path):
    path = tmp_path / "predictions.jsonl"
    writer = PredictionLogWriter(path).start()
    submit(writer, request_id="three-rows", rows=[[5.1, 3.5, 1.4, 0.2]] * 3)
    writer.close()
    assert [r["row"] for r in read_log(path).records] == [0, 1, 2]


def test_a_prediction_record_without_row_is_still_read_but_a_bad_row_is_not(tmp_path):
    record = make_record(
        ts="t",
        request_id="a",
        model_name="iris",
        model_version="1",
        features=[5.1, 3.5, 1.4, 0.2],
        names=FEATURES,
        prediction="setosa",
        confidence=0.9,
        latency_ms=1.0,
    )
    legacy = {key: value for key, value in record.items() if key != "row"}
    assert parse_line(encode(legacy)) == legacy
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b"".join(encode({**record, "row": bad}) for bad in (-1, True, 1.5, "0")))
    assert read_log(path).skipped == 4


def test_feedback_lines_that_name_no_request_row_or_class_name_are_skipped_and_counted(tmp_path):
    good = make_feedback_record(ts="2026-01-01T00:00:00.000Z", request_id="a", row=0, label="setosa")
    bad = [
        {**good, "label": ""},
        {**good, "label": 0},
        {**good, "row": -1},
        {**good, "row": None},
        {**good, "request_id": "has spaces"},
        {**good, "request_id": None},
    ]
    path = tmp_path / "feedback.jsonl"
    path.write_bytes(encode(good) + b"[1, 2]\n" + b"".join(encode(r) for r in bad) + encode(good))
    contents = read_feedback_log(path)
    assert contents.records == [good, good]
    assert contents.skipped == 7 and contents.first_skipped == "line 2: not a JSON object"


def test_rotated_files_lists_the_log_and_its_backups_oldest_first(tmp_path):
    path = tmp_path / "feedback.jsonl"
    assert rotated_files(path) == []
    writer = FeedbackLogWriter(path, max_bytes=200, backup_count=3).start()
    for i in range(12):
        writer.submit([(f"req-{i}", 0, "setosa")])
        wait_until(lambda: path.exists() and f"req-{i}" in path.read_text(), timeout=10, what="the label written")
    writer.close()
    files = rotated_files(path)
    assert [p.name for p in files] == ["feedback.jsonl.3", "feedback.jsonl.2", "feedback.jsonl.1", "feedback.jsonl"]
    ids = [r["request_id"] for p in files for r in read_feedback_log(p).records]
    assert ids == sorted(ids, key=lambda i: int(i.split("-")[1])) and ids[-1] == "req-11"


def test_a_feedback_log_that_cannot_be_opened_is_failing_from_the_start_and_recovers_by_itself(tmp_path):
    path = tmp_path / "logs" / "feedback.jsonl"
    path.parent.write_text("a file where the log's directory belongs")
    tally = Tally()
    writer = FeedbackLogWriter(path, on_written=tally.on_written, on_dropped=tally.on_dropped).start()
    try:
        wait_until(lambda: writer.failing, timeout=10, what="the writer to notice")
        assert writer.submit(LABELS)
        wait_until(lambda: tally.dropped, timeout=10, what="the dropped labels")
        assert tally.dropped == {DROPPED_WRITE_ERROR: 2}
        path.parent.unlink()
        wait_until(lambda: not writer.failing, timeout=20, what="the writer to reopen the file")
        assert writer.submit(LABELS[:1])
    finally:
        writer.close()
    assert tally.written == 1 and read_feedback_log(path).records[0]["request_id"] == "req-1"


def test_a_full_feedback_queue_refuses_the_whole_list(tmp_path):
    tally = Tally()
    writer = FeedbackLogWriter(tmp_path / "f.jsonl", max_queued_rows=1, on_dropped=tally.on_dropped)  # not started
    assert writer.submit(LABELS[:1]) is True
    assert writer.submit(LABELS) is False
    assert tally.dropped == {DROPPED_QUEUE_FULL: 2}


def test_a_log_in_a_directory_that_does_not_exist_yet_gets_it_made(tmp_path):
    path = tmp_path / "logs" / "today" / "feedback.jsonl"
    writer = FeedbackLogWriter(path).start()
    writer.submit(LABELS)
    writer.close()
    assert len(read_feedback_log(path).records) == 2
