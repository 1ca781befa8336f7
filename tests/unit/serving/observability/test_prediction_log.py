"""The prediction log: its format, rotation, sampling, and that a broken disk or a full queue only drops rows."""

import os
import stat

import orjson
import pytest

from iris_core.records import FIELDS, encode, make_record, read_log
from serving.files.log_writer import DROPPED_QUEUE_FULL, DROPPED_WRITE_ERROR, RotatingFile
from serving.observability.prediction_log import PredictionLogWriter
from tests.helpers.log_writers import FEATURES, ROW, Tally, submit
from tests.helpers.support import wait_until


def record(request_id="r0000", version="2", confidence=0.97, latency_ms=3.25) -> dict:
    """One logged row of ``ROW`` answered "setosa", at a fixed time."""
    return make_record(
        ts="2026-01-01T00:00:00.000Z",
        request_id=request_id,
        model_name="iris",
        model_version=version,
        features=ROW,
        names=FEATURES,
        prediction="setosa",
        confidence=confidence,
        latency_ms=latency_ms,
    )


def log_lines(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_each_row_of_a_request_becomes_one_line_in_the_documented_format(tmp_path):
    path = tmp_path / "predictions.jsonl"
    tally = Tally()
    writer = PredictionLogWriter(path, on_written=tally.on_written).start()
    assert submit(writer, rows=[ROW, [6.0, 2.9, 4.5, 1.5]])
    writer.close()
    lines = log_lines(path)
    assert len(lines) == 2 and tally.written == 2
    first = lines[0]
    assert tuple(first) == FIELDS
    assert first["features"] == dict(zip(FEATURES, ROW))
    assert first["ts"].endswith("Z") and first["request_id"] == "r1"
    assert (first["model_name"], first["model_version"], first["prediction"]) == ("iris", "2", "setosa")
    assert (first["confidence"], first["latency_ms"]) == (0.97, 3.25)
    assert lines[1]["features"]["petal_length"] == 4.5


def test_read_log_returns_what_the_writer_wrote_and_counts_unreadable_lines(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = record(request_id="a", version="1", confidence=0.9, latency_ms=1.0)
    no_feature = {**good, "features": {"sepal_length": "long"}}
    bad_confidence = {**good, "confidence": 1.5}
    path.write_bytes(
        encode(good) + b"not json\n\n" + encode(no_feature) + encode(bad_confidence) + b"\xff\xfe\n" + encode(good)
    )
    contents = read_log(path)
    assert contents.records == [good, good]
    assert contents.skipped == 4
    assert contents.first_skipped == "line 2: not JSON"


def test_the_log_rotates_by_size_and_keeps_a_bounded_number_of_files(tmp_path):
    path = tmp_path / "predictions.jsonl"
    line_size = len(encode(record()))
    writer = PredictionLogWriter(path, max_bytes=line_size * 10, backup_count=2).start()
    for i in range(100):
        submit(writer, request_id=f"r{i:04d}")
    writer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    for name in names:
        assert (tmp_path / name).stat().st_size <= line_size * 10
    newest_first = [line["request_id"] for name in names for line in reversed(log_lines(tmp_path / name))]
    assert newest_first == [f"r{i:04d}" for i in range(99, 69, -1)]


def test_a_rotating_file_never_rotates_with_max_bytes_zero(tmp_path):
    path = tmp_path / "predictions.jsonl"
    log = RotatingFile(path, max_bytes=0, backup_count=1)
    for _ in range(50):
        log.write_lines([b"x" * 100 + b"\n"])
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]
    assert path.stat().st_size == 50 * 101


def test_a_log_path_that_is_a_directory_drops_the_rows_and_counts_them(tmp_path):
    tally = Tally()
    writer = PredictionLogWriter(tmp_path, on_written=tally.on_written, on_dropped=tally.on_dropped).start()
    assert submit(writer, rows=[ROW, ROW, ROW])
    writer.close()
    assert tally.dropped == {DROPPED_WRITE_ERROR: 3}
    assert tally.written == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_drops_the_rows_and_counts_them(tmp_path):
    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    tally = Tally()
    try:
        writer = PredictionLogWriter(directory / "p.jsonl", on_dropped=tally.on_dropped).start()
        submit(writer)
        writer.close()
    finally:
        directory.chmod(stat.S_IRWXU)
    assert tally.dropped == {DROPPED_WRITE_ERROR: 1}


def test_the_writer_recovers_when_the_log_path_becomes_writable(tmp_path):
    path = tmp_path / "logs" / "predictions.jsonl"
    path.parent.write_text("a file where the log's directory belongs")
    tally = Tally()
    writer = PredictionLogWriter(path, on_written=tally.on_written, on_dropped=tally.on_dropped).start()
    submit(writer, request_id="before")
    wait_until(lambda: tally.dropped, timeout=30, what="the failed write")
    path.parent.unlink()
    submit(writer, request_id="after")
    writer.close()
    assert tally.dropped == {DROPPED_WRITE_ERROR: 1} and tally.written == 1
    assert [line["request_id"] for line in log_lines(path)] == ["after"]


def test_a_full_queue_drops_the_request_without_blocking(tmp_path):
    tally = Tally()
    writer = PredictionLogWriter(
        tmp_path / "p.jsonl", max_queued_rows=1, on_dropped=tally.on_dropped
    )  # not started: nothing drains
    assert submit(writer, request_id="queued") is True
    assert submit(writer, request_id="dropped", rows=[ROW, ROW]) is False
    assert tally.dropped == {DROPPED_QUEUE_FULL: 2}


def test_a_malformed_request_is_dropped_and_later_requests_are_still_written(tmp_path):
    path = tmp_path / "predictions.jsonl"
    tally = Tally()
    writer = PredictionLogWriter(path, on_dropped=tally.on_dropped).start()
    submit(writer, request_id="bad", rows=[[float("nan"), 3.5, 1.4, 0.2]])
    writer.close(timeout=10)
    writer = PredictionLogWriter(path, on_dropped=tally.on_dropped).start()
    submit(writer, request_id="good")
    writer.close(timeout=10)
    assert tally.dropped == {DROPPED_WRITE_ERROR: 1}
    assert [line["request_id"] for line in log_lines(path)] == ["good"]


@pytest.mark.parametrize("rate, expected", [(0.0, 0), (1.0, 200)])
def test_sample_rate_zero_logs_nothing_and_one_logs_everything(tmp_path, rate, expected):
    path = tmp_path / "predictions.jsonl"
    writer = PredictionLogWriter(path, sample_rate=rate).start()
    for i in range(200):
        submit(writer, request_id=str(i))
    writer.close()
    assert (len(log_lines(path)) if path.exists() else 0) == expected


def test_sampling_keeps_or_drops_whole_requests(tmp_path):
    path = tmp_path / "predictions.jsonl"
    writer = PredictionLogWriter(path, sample_rate=0.5).start()
    for i in range(400):
        submit(writer, request_id=str(i), rows=[ROW, ROW, ROW])
    writer.close()
    per_request: dict[str, int] = {}
    for line in log_lines(path):
        per_request[line["request_id"]] = per_request.get(line["request_id"], 0) + 1
    assert set(per_request.values()) == {3}
    assert 100 < len(per_request) < 300


def test_a_sample_rate_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        PredictionLogWriter(tmp_path / "p.jsonl", sample_rate=1.5)


@pytest.mark.parametrize(
    ("rate", "words"),
    [
        (1.0, "every scored request"),
        (0.1, "10% of the scored requests"),
        (0.005, "0.5% of the scored requests"),
        (0.0, "no scored request (--log-sample-rate 0)"),
    ],
)
def test_the_start_up_line_says_in_words_which_requests_are_logged(rate, words):
    from serving.observability.monitoring import sampled

    assert sampled(rate) == words
