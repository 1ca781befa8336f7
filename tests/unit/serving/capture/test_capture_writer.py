"""The capture's writer, spool and uploader in process, against a store the test drives: the rules, one by one.

Files close by rows, by age and at the end of their hour; memory is bounded and what does
not fit is dropped and counted; a store that is down or hangs never blocks a submit, and
the spool keeps closed files until it takes them, oldest first, or drops past its bound;
labels are acknowledged only once synced to disk; a stop closes every open file, and what
a crash leaves in the spool reaches the store at the next start. The real proxy against a
real tracking server is ``tests/integration/serving/test_capture_store.py``.
"""

import io
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iris_core.capture import FEEDBACK, PREDICTIONS, parse_partition
from serving.capture.spool import Spool
from serving.capture.stores import DirectoryStore, StoreError
from serving.capture.uploader import Uploader
from serving.capture.writer import DROPPED_SPOOL_FULL, CaptureWriter
from serving.errors import ConfigError
from serving.files.log_writer import DROPPED_QUEUE_FULL
from tests.helpers.support import wait_until

NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
ROW = [5.1, 3.5, 1.4, 0.2]
ANSWER = {"prediction": "setosa", "confidence": 0.97}
HOUR = 1_796_600_000 // 3600 * 3600  # the start of an hour, in epoch seconds


class FakeStore:
    """Keeps what it is given in memory; ``down`` makes every put fail, ``hang`` makes the next put wait."""

    location = "fake"
    timeout_s = 0.5

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.order: list[str] = []
        self.down = False
        self.hang = threading.Event()
        self.release = threading.Event()

    def put(self, local: Path, relative: str) -> None:
        if self.hang.is_set():
            self.release.wait(30)
        if self.down:
            raise StoreError("the store is down")
        self.files[relative] = local.read_bytes()
        self.order.append(relative)

    def close(self) -> None:
        pass

    def rows(self, kind: str = PREDICTIONS) -> list[dict]:
        return [row for path, data in sorted(self.files.items()) if path.startswith(kind) for row in table(data)]


def table(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Capture:
    """A writer, its spool and an uploader to a fake store, as the proxy wires them."""

    def __init__(self, directory: Path, store=None, replica="r1", spool_bytes=10**9, **options):
        self.store = store or FakeStore()
        self.dropped: dict[str, int] = {}
        self.stored: dict[str, int] = {}
        self.spool = Spool(directory, replica, spool_bytes)
        options.setdefault("file_rows", 1000)
        options.setdefault("file_seconds", 3600)
        options.setdefault("max_buffered_rows", 100_000)
        self.writer = CaptureWriter(self.spool, replica, on_dropped=self._dropped, **options)
        self.writer.recover(self.spool.open())
        self.uploader = Uploader(self.spool, self.store, on_stored=self._stored)

    def _dropped(self, kind, reason, rows):
        self.dropped[reason] = self.dropped.get(reason, 0) + rows

    def _stored(self, kind, rows):
        self.stored[kind] = self.stored.get(kind, 0) + rows

    def start(self) -> "Capture":
        self.writer.start()
        self.uploader.start()
        return self

    def close(self, flush: float = 5.0) -> None:
        self.writer.close(5.0)
        self.uploader.close(flush)
        self.spool.close()

    def predict(self, request_id: str, rows: int = 1, version: str | None = "2", epoch: float | None = None) -> bool:
        return self.writer.submit_predictions(
            request_id=request_id,
            model_name="iris",
            model_version=version,
            names=NAMES,
            rows=[ROW] * rows,
            predictions=[ANSWER] * rows,
            latency_ms=2.5,
            epoch=epoch,
        )

    def label(self, labels, epoch: float | None = None) -> list:
        """Submit labels and wait for the writer's word on them: [True] kept, [False] refused, [] not queued."""
        answers, answered = [], threading.Event()

        def done(kept):
            answers.append(kept)
            answered.set()

        if self.writer.submit_labels("iris", labels, done, epoch=epoch):
            assert answered.wait(10), "the writer never answered"
        return answers


@pytest.fixture
def capture(tmp_path):
    made = []

    def make(**options) -> Capture:
        made.append(Capture(tmp_path / "spool", **options))
        return made[-1]

    yield make
    for one in made:
        if one.spool._lock_fd is not None:
            one.close(flush=0.5)


def test_a_file_closes_at_file_rows_and_the_store_gets_it_whole_under_the_partition_of_its_rows(capture):
    one = capture(file_rows=10).start()
    for i in range(25):
        assert one.predict(f"req-{i}", epoch=HOUR + 60 + i)
    wait_until(lambda: len(one.store.files) == 2, timeout=10, what="two files in the store")
    assert one.writer.buffered_rows == 5  # the open file's rows
    one.close()
    paths = sorted(one.store.files)
    assert len(paths) == 3
    for path in paths:
        directory, _, name = path.rpartition("/")
        partition = parse_partition(directory)
        assert (partition.kind, partition.model, partition.version, partition.hour) == (PREDICTIONS, "iris", "2", HOUR)
        assert name.startswith("r1-") and name.endswith(".parquet")
    rows = one.store.rows()
    assert [r["request_id"] for r in rows] == [f"req-{i}" for i in range(25)]
    first = rows[0]
    assert first["features"] == dict(zip(NAMES, ROW)) and first["prediction"] == "setosa"
    assert (first["confidence"], first["row"], first["model_version"]) == (0.97, 0, "2")
    assert one.stored == {PREDICTIONS: 25}


def test_a_file_closes_file_seconds_after_it_opened_without_any_more_rows(capture):
    clock = Clock(1000.0)
    one = capture(file_seconds=30, monotonic=clock).start()
    one.predict("a", rows=3)
    time.sleep(0.3)
    assert one.store.files == {}
    clock.now += 31
    wait_until(lambda: one.store.files, timeout=10, what="the file to close by age")
    assert len(one.store.rows()) == 3


def test_rows_of_a_new_hour_close_the_previous_hours_file_and_go_to_their_own_partition(capture):
    one = capture().start()
    one.predict("late", epoch=HOUR + 3599)
    one.predict("early", epoch=HOUR + 3600)
    wait_until(lambda: len(one.store.files) == 1, timeout=10, what="the first hour's file")
    (closed,) = one.store.files
    assert parse_partition(closed.rpartition("/")[0]).hour == HOUR
    one.close()
    hours = sorted(parse_partition(path.rpartition("/")[0]).hour for path in one.store.files)
    assert hours == [HOUR, HOUR + 3600]


def test_each_version_and_requests_without_one_get_files_of_their_own(capture):
    one = capture().start()
    one.predict("a", version="2")
    one.predict("b", version="3")
    one.predict("c", version=None)
    one.close()
    versions = sorted(parse_partition(path.rpartition("/")[0]).version for path in one.store.files)
    assert versions == ["2", "3", "unknown"]


def test_memory_is_bounded_in_rows_and_what_does_not_fit_is_dropped_and_counted(capture):
    one = capture(file_rows=100, max_buffered_rows=250)  # not started: nothing drains
    assert one.predict("a", rows=200) and one.predict("b", rows=50)
    assert not one.predict("c", rows=1)
    assert not one.predict("d", rows=10)
    assert one.writer.buffered_rows == 250
    assert one.dropped == {DROPPED_QUEUE_FULL: 11}
    assert one.label([("a", 0, "setosa", "2")]) == [], "labels past the buffer are refused, not dropped"
    assert one.dropped == {DROPPED_QUEUE_FULL: 11}


def test_open_files_never_hold_more_than_half_the_buffer(capture):
    one = capture(file_rows=10_000, max_buffered_rows=1000).start()
    for i in range(30):
        one.predict(f"r{i}", rows=100)
        wait_until(lambda: one.writer.queued_rows == 0, timeout=10, what="the queue to drain")
        assert one.writer.open_rows <= 500
    assert one.dropped == {}
    one.close()
    assert len(one.store.rows()) == 3000


def test_a_store_that_is_down_never_blocks_a_submit_and_the_spool_keeps_the_files_until_it_is_back(capture):
    store = FakeStore()
    store.down = True
    one = capture(store=store, file_rows=5).start()
    started = time.perf_counter()
    for i in range(50):
        assert one.predict(f"r{i}")
    assert time.perf_counter() - started < 0.5, "submitting waited for something"
    wait_until(lambda: one.spool.ready_files == 10, timeout=10, what="ten files in the spool")
    wait_until(lambda: one.uploader.failing, timeout=10, what="the uploader to see the store down")
    assert one.uploader.state == "failing" and one.uploader.last_error == "the store is down"
    assert store.files == {} and one.dropped == {}
    store.down = False
    wait_until(lambda: one.spool.ready_files == 0, timeout=30, what="the spool to empty")
    assert one.uploader.state == "ok"
    assert store.order == sorted(store.order), "oldest first"
    assert [r["request_id"] for r in store.rows()] == [f"r{i}" for i in range(50)]


def test_a_full_spool_drops_rows_and_counts_them_while_the_store_is_down(capture):
    store = FakeStore()
    store.down = True
    one = capture(store=store, file_rows=100, spool_bytes=6000).start()
    for i in range(20):
        one.predict(f"r{i}", rows=100)
    wait_until(lambda: one.dropped.get(DROPPED_SPOOL_FULL), timeout=10, what="a drop for a full spool")
    wait_until(lambda: one.writer.buffered_rows == 0, timeout=10, what="the writer to settle")
    kept = sum(pq.read_metadata(p).num_rows for p in one.spool.ready_directory.rglob("*.parquet"))
    assert kept + one.dropped[DROPPED_SPOOL_FULL] == 2000
    assert one.spool.bytes <= 6000 + max(p.stat().st_size for p in one.spool.ready_directory.rglob("*.parquet"))


def test_an_upload_that_hangs_shows_stalled_and_the_writer_goes_on_filling_the_spool(capture):
    store = FakeStore()
    store.hang.set()
    one = capture(store=store, file_rows=1).start()
    try:
        one.predict("first")
        wait_until(lambda: one.uploader.stalled, timeout=15, what="the upload to count as stalled")
        for i in range(5):
            assert one.predict(f"r{i}")
        wait_until(lambda: one.spool.ready_files == 6, timeout=10, what="the files to wait in the spool")
        assert one.uploader.state == "stalled"
    finally:
        store.hang.clear()
        store.release.set()
    wait_until(lambda: one.spool.ready_files == 0, timeout=10, what="the spool to empty")


def test_close_puts_every_open_file_in_the_store(capture):
    one = capture(file_rows=1000).start()
    one.predict("a", rows=7)
    assert one.label([("a", 0, "setosa", "2")]) == [True]
    one.close()
    assert len(one.store.rows(PREDICTIONS)) == 7
    assert [r["label"] for r in one.store.rows(FEEDBACK)] == ["setosa"]
    assert not any(p.is_file() for p in (one.spool.directory / "ready").rglob("*"))


def test_labels_are_acknowledged_once_synced_to_the_journal_and_grouped_by_version_when_their_file_closes(capture):
    one = capture().start()
    labels = [("a", 0, "setosa", "2"), ("a", 1, "virginica", "2"), ("b", 0, "versicolor", None)]
    assert one.label(labels, epoch=HOUR + 10) == [True]
    (journal,) = one.spool.journal_directory.iterdir()
    assert len(journal.read_bytes().splitlines()) == 3, "on disk when acknowledged"
    one.close()
    by_version = {parse_partition(p.rpartition("/")[0]).version: table(d) for p, d in one.store.files.items()}
    assert {v: [r["label"] for r in rows] for v, rows in by_version.items()} == {
        "2": ["setosa", "virginica"],
        "unknown": ["versicolor"],
    }
    assert by_version["2"][1]["row"] == 1 and by_version["unknown"][0]["model_version"] is None
    assert not list(one.spool.journal_directory.iterdir())


def test_a_label_goes_under_the_model_whose_answer_it_names_else_under_the_first_model(capture):
    one = capture().start()
    labels = [("a", 0, "0", "1", "wine"), ("b", 0, "setosa", "2", None), ("c", 0, "setosa", None)]
    assert one.label(labels, epoch=HOUR + 10) == [True]
    one.close()
    by_model = {}
    for path, data in one.store.files.items():
        by_model.setdefault(parse_partition(path.rpartition("/")[0]).model, []).extend(
            r["request_id"] for r in table(data)
        )
    assert {model: sorted(ids) for model, ids in by_model.items()} == {"wine": ["a"], "iris": ["b", "c"]}


def test_labels_the_journal_cannot_take_are_refused_and_nothing_of_them_is_kept(capture):
    one = capture().start()
    one.spool.journal_directory.rmdir()
    one.spool.journal_directory.write_bytes(b"")  # a file where the journal's directory should be
    assert one.label([("a", 0, "setosa", "2")]) == [False]
    assert one.writer.failing
    one.spool.journal_directory.unlink()
    assert one.label([("b", 0, "setosa", "2")]) == [True]
    one.close()
    assert [r["request_id"] for r in one.store.rows(FEEDBACK)] == ["b"]


def test_a_full_spool_refuses_labels_instead_of_losing_them(capture):
    store = FakeStore()
    store.down = True
    one = capture(store=store, spool_bytes=300).start()
    assert one.label([("a", 0, "setosa", "2")]) == [True]
    assert one.label([(f"b{i}", 0, "setosa", "2") for i in range(5)]) == [False]


def test_what_a_crash_leaves_in_the_spool_reaches_the_store_at_the_next_start_and_nothing_twice(tmp_path):
    store = FakeStore()
    store.down = True
    first = Capture(tmp_path / "spool", store=store, file_rows=10).start()
    for i in range(25):
        first.predict(f"r{i}")
    assert first.label([("r1", 0, "setosa", "2"), ("r2", 0, "virginica", "2")]) == [True]
    wait_until(lambda: first.spool.ready_files == 2, timeout=10, what="two files in the spool")
    # A SIGKILL: the threads stop where they are, the open file's 5 rows are lost, the spool stays.
    first.writer._finish = lambda: None
    first.writer._stop.set()
    first.uploader._stop.set()
    first.uploader._deadline = 0
    first.writer._thread.join(5)
    with open(next(first.spool.journal_directory.iterdir()), "ab") as journal:
        journal.write(b'{"ts": 1, "request_id": "cut')  # a write the crash cut in the middle
    first.spool.close()

    store.down = False
    second = Capture(tmp_path / "spool", store=store, file_rows=10).start()
    second.close()
    assert sorted(r["request_id"] for r in store.rows(PREDICTIONS)) == sorted(f"r{i}" for i in range(20))
    assert [r["request_id"] for r in store.rows(FEEDBACK)] == ["r1", "r2"]
    assert len(store.order) == len(set(store.order)) == 3


def test_a_journal_converted_before_a_crash_is_converted_again_to_the_same_names(tmp_path):
    store = FakeStore()
    store.down = True
    one = Capture(tmp_path / "spool", store=store)
    one.writer.start()
    assert one.label([("a", 0, "setosa", "2")]) == [True]
    (journal,) = one.spool.journal_directory.iterdir()
    kept = journal.read_bytes()
    one.writer.close()  # converts it into a ready file and deletes it
    journal.write_bytes(kept)  # as if the crash came before the deletion was on disk
    one.spool.close()
    store.down = False
    again = Capture(tmp_path / "spool", store=store).start()
    again.close()
    assert [r["request_id"] for r in store.rows(FEEDBACK)] == ["a"] and len(set(store.order)) == 1


def test_a_second_writer_cannot_take_a_spool_another_one_holds(capture, tmp_path):
    capture(replica="web-1")
    with pytest.raises(ConfigError, match="another proxy captures through the spool"):
        Spool(tmp_path / "spool", "web-1", 10**6).open()
    other = Spool(tmp_path / "spool", "web-2", 10**6)
    other.open()
    other.close()


def test_a_directory_store_shows_a_file_only_under_its_final_name_once_complete(tmp_path):
    store = DirectoryStore(tmp_path / "capture")
    source = tmp_path / "file.parquet"
    source.write_bytes(b"PAR1" + b"x" * 100_000 + b"PAR1")
    seen = []
    real_replace = __import__("os").replace

    def watching_replace(src, dst):
        seen.append((Path(src).name, Path(dst).exists()))
        real_replace(src, dst)

    import serving.capture.stores as stores

    original = stores.os.replace
    stores.os.replace = watching_replace
    try:
        store.put(source, "predictions/model=iris/version=1/date=2026-12-06/hour=21/r1-1.parquet")
    finally:
        stores.os.replace = original
    final = tmp_path / "capture/predictions/model=iris/version=1/date=2026-12-06/hour=21/r1-1.parquet"
    assert seen == [(".r1-1.parquet.uploading", False)] and final.read_bytes() == source.read_bytes()
    assert [p.name for p in final.parent.iterdir()] == ["r1-1.parquet"]
    (tmp_path / "capture/predictions/model=iris/version=1/date=2026-12-06/hour=21").chmod(0o500)
    try:
        if __import__("os").geteuid() != 0:
            with pytest.raises(StoreError, match="cannot write"):
                store.put(source, "predictions/model=iris/version=1/date=2026-12-06/hour=21/r1-2.parquet")
    finally:
        final.parent.chmod(0o700)
