"""Reading ahead and writing behind: order kept, memory bounded, failures raised where the job meets them."""

import threading
import time

import pytest

from steps.batch.threads import read_ahead, write_behind


def test_items_read_ahead_come_in_order_and_at_most_depth_ahead():
    produced = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    for item in read_ahead(items(), depth=2):
        time.sleep(0.005)
        assert len(produced) - len(seen) <= 2 + 2  # queued, one being put, one being handed over
        seen.append(item)
    assert seen == list(range(20))


def test_a_failure_while_reading_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_the_reader_early_stops_its_thread():
    before = threading.active_count()
    reader = read_ahead(iter(range(1_000_000)), depth=1)
    assert next(reader) == 0
    reader.close()
    assert threading.active_count() == before


def test_writes_behind_happen_in_order_before_the_block_ends():
    written = []
    with write_behind(depth=1) as put:
        for i in range(10):
            put(written.append, i)
    assert written == list(range(10))


def test_a_failed_write_is_raised_and_later_writes_are_skipped():
    written = []

    def write(item):
        if item == 3:
            raise OSError("no space left")
        written.append(item)

    with pytest.raises(OSError, match="no space left"):
        with write_behind() as put:
            for i in range(10):
                put(write, i)
                time.sleep(0.002)
    assert written == [0, 1, 2]


def test_after_the_job_fails_nothing_more_is_written():
    written = []

    def slow_write(item):
        time.sleep(0.02)
        written.append(item)

    with pytest.raises(RuntimeError, match="the model broke"):
        with write_behind(depth=4) as put:
            for i in range(4):
                put(slow_write, i)
            raise RuntimeError("the model broke")
    assert len(written) < 4
