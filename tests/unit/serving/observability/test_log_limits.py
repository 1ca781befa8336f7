"""What the prediction and feedback logs do when their disk fills up or stops: bounded, counted, never torn.

Real files throughout: a named pipe whose reader never reads as a disk whose writes block
without failing. The disk that fills up (a small tmpfs mounted for the test) is in
``tests/integration/serving/test_log_limits.py``.
"""

import os
import threading

from iris_core.records import encode, make_feedback_record, read_feedback_log
from serving.feedback.log import FeedbackLogWriter
from serving.files import log_writer
from serving.files.log_writer import DEFAULT_QUEUE_ROWS, DROPPED_QUEUE_FULL
from serving.observability.prediction_log import PredictionLogWriter
from tests.helpers.log_writers import ROW, Tally, submit
from tests.helpers.support import wait_until


def test_the_queue_is_bounded_in_rows_so_two_requests_at_the_row_limit_fill_it():
    tally = Tally()
    writer = PredictionLogWriter("never-written.jsonl", on_dropped=tally.on_dropped)  # not started: nothing drains
    big = [ROW] * (DEFAULT_QUEUE_ROWS // 2)
    assert submit(writer, request_id="first", rows=big) and submit(writer, request_id="second", rows=big)
    assert not submit(writer, request_id="third", rows=big)
    assert not submit(writer, request_id="one more row")
    assert writer.queued_rows == DEFAULT_QUEUE_ROWS
    assert tally.dropped == {DROPPED_QUEUE_FULL: len(big) + 1}


def test_a_log_whose_writes_block_without_failing_is_stalled_in_its_health_and_drops_past_its_bound(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(log_writer, "STALL_AFTER_S", 0.3)
    path = tmp_path / "predictions.jsonl"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # it never reads: the pipe fills, then writes block
    tally = Tally()
    writer = PredictionLogWriter(path, max_queued_rows=1000, on_written=tally.on_written, on_dropped=tally.on_dropped)
    writer.start()
    try:
        for i in range(100):  # 10,000 rows, ~2.5 MB: far past the pipe's 64 KiB
            submit(writer, request_id=f"r{i}", rows=[ROW] * 100)
        wait_until(lambda: writer.stalled, timeout=10, what="the stall to show")
        health = writer.health()
        assert (health["state"], health["max_queued_rows"]) == ("stalled", 1000)
        assert 0 < writer.queued_rows <= 1000 and tally.dropped[DROPPED_QUEUE_FULL] >= 9000
        assert tally.written + tally.dropped[DROPPED_QUEUE_FULL] + writer.queued_rows == 10_000
        assert not writer.failing, "a write that blocks has not failed"
    finally:
        os.close(reader)  # the writer's blocked write fails (EPIPE) and the thread can stop
        writer.close(timeout=10)


def test_a_pipe_as_the_log_path_gets_every_line_and_is_never_rotated(tmp_path):
    path = tmp_path / "predictions.jsonl"
    os.mkfifo(path)
    received = bytearray()

    def read():
        with open(path, "rb") as pipe:
            while chunk := pipe.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tally = Tally()
    writer = PredictionLogWriter(path, max_bytes=100, on_written=tally.on_written).start()
    for i in range(20):
        submit(writer, request_id=f"r{i}", rows=[ROW, ROW])
    writer.close()
    reader.join(timeout=10)
    assert len(received.splitlines()) == 40 == tally.written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


def test_a_partial_last_line_left_by_a_crash_is_cut_before_anything_is_appended(tmp_path):
    path = tmp_path / "feedback.jsonl"
    whole = encode(make_feedback_record(ts="2026-01-01T00:00:00.000Z", request_id="before", row=0, label="setosa"))
    path.write_bytes(whole + whole[:-20])  # the second record lost its end
    writer = FeedbackLogWriter(path).start()
    assert writer.submit([("after", 0, "virginica")])
    writer.close()
    contents = read_feedback_log(path)
    assert contents.skipped == 0 and [r["request_id"] for r in contents.records] == ["before", "after"]
