"""What the prediction and feedback logs do when their disk fills up or stops: bounded, counted, never torn.

Real files throughout: a small tmpfs mounted for the test (by ``mount``) as a disk that fills
up (root only; skipped otherwise). The disk whose writes block is in
``tests/unit/serving/observability/test_log_limits.py``.
"""

import threading

import pytest

from iris_core.records import read_feedback_log, read_log
from serving.feedback.log import FeedbackLogWriter
from serving.files.log_writer import DROPPED_WRITE_ERROR
from serving.observability.prediction_log import PredictionLogWriter
from tests.helpers.log_writers import ROW, Tally, submit
from tests.helpers.support import small_tmpfs, wait_until


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs whose last 16 KiB a file holds, so that a test can free them."""
    with small_tmpfs(tmp_path / "disk") as disk:
        (disk / "filler").write_bytes(b"x" * 16 * 1024)
        yield disk


def fill(writer: PredictionLogWriter, tally: Tally, failures: int = 3) -> int:
    """Submit 40-row requests, one at a time, until ``failures`` of them failed to be written; rows submitted."""
    submitted = 0
    for i in range(200):
        submit(writer, request_id=f"r{i}", rows=[ROW] * 40)
        submitted += 40
        wait_until(lambda: tally.written + sum(tally.dropped.values()) == submitted, timeout=10, what="the write")
        if tally.dropped.get(DROPPED_WRITE_ERROR, 0) >= failures * 40:
            return submitted
    raise AssertionError("the disk never filled up")


def test_on_a_full_disk_a_failed_write_leaves_no_partial_line_and_the_written_count_is_what_the_file_holds(
    full_disk,
):
    path, tally = full_disk / "predictions.jsonl", Tally()
    writer = PredictionLogWriter(path, on_written=tally.on_written, on_dropped=tally.on_dropped).start()
    try:
        fill(writer, tally)
        assert writer.failing
        data = path.read_bytes()
        assert data.endswith(b"\n"), "the failed write left a partial line"
        contents = read_log(path)
        assert contents.skipped == 0 and len(contents.records) == tally.written > 0
        assert tally.written % 40 == 0, "each request whole or not at all"
        (full_disk / "filler").unlink()  # space again
        submit(writer, request_id="after", rows=[ROW] * 40)
        wait_until(lambda: not writer.failing, timeout=10, what="the next write")
    finally:
        writer.close()
    contents = read_log(path)
    assert contents.skipped == 0, "the next record was glued onto a fragment"
    assert len(contents.records) == tally.written and contents.records[-1]["request_id"] == "after"


def test_on_a_full_disk_labels_are_reported_kept_only_once_they_are_in_the_file(full_disk):
    path, tally = full_disk / "feedback.jsonl", Tally()
    writer = FeedbackLogWriter(path, on_written=tally.on_written, on_dropped=tally.on_dropped).start()
    answers: list[tuple[str, bool]] = []
    try:
        for i in range(2000):
            done = threading.Event()
            request_id = f"label-{i}"

            def settled(kept, request_id=request_id, done=done):
                answers.append((request_id, kept))
                done.set()

            assert writer.submit([(request_id, 0, "setosa"), (request_id, 1, "versicolor")], settled)
            assert done.wait(10)
            if sum(not kept for _, kept in answers) >= 3:
                break
    finally:
        writer.close()
    kept = [request_id for request_id, ok in answers if ok]
    contents = read_feedback_log(path)
    assert path.read_bytes().endswith(b"\n") and contents.skipped == 0
    assert [r["request_id"] for r in contents.records] == [r for r in kept for _ in range(2)]
    assert tally.written == len(contents.records)
    assert tally.dropped[DROPPED_WRITE_ERROR] == 2 * (len(answers) - len(kept))
