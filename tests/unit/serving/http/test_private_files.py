"""The files that hold requests' data, and the model servers' sockets, are their owner's alone, whatever the umask."""

import os

import pytest

from serving.feedback.log import FeedbackLogWriter
from serving.files.private import open_private
from serving.observability.prediction_log import PredictionLogWriter
from tests.helpers.file_modes import mode
from tests.helpers.iris import FEATURES
from tests.helpers.support import wait_until

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def open_umask():
    """The most permissive umask a service could run with: files would be created 0666."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_the_prediction_log_and_its_rotated_files_are_created_0600(tmp_path, open_umask):
    path = tmp_path / "logs" / "predictions.jsonl"
    writer = PredictionLogWriter(path, max_bytes=300, backup_count=3).start()
    try:
        for number in range(10):
            writer.submit(
                request_id=f"r{number}",
                model_name="iris",
                model_version="2",
                names=FEATURES,
                rows=[ROW],
                predictions=[{"prediction": "setosa", "confidence": 0.97}],
                latency_ms=1.0,
            )
        wait_until(lambda: (tmp_path / "logs" / "predictions.jsonl.2").exists(), 10, what="two rotations")
    finally:
        writer.close()
    files = sorted((tmp_path / "logs").iterdir())
    assert len(files) >= 3 and {mode(file) for file in files} == {0o600}


def test_the_feedback_log_is_created_0600(tmp_path, open_umask):
    path = tmp_path / "feedback.jsonl"
    writer = FeedbackLogWriter(path).start()
    try:
        writer.submit([("r1", 0, "setosa")])
        wait_until(lambda: path.exists() and path.stat().st_size > 0, 10, what="the label to be written")
    finally:
        writer.close()
    assert mode(path) == 0o600


def test_an_existing_log_loses_other_users_access_and_keeps_its_group(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b"")
    path.chmod(0o644)
    with open_private(path) as file:
        file.write(b"{}\n")
    assert mode(path) == 0o640
    with open_private(path) as file:
        file.write(b"{}\n")
    assert path.read_bytes() == b"{}\n{}\n", "appended, never truncated"
