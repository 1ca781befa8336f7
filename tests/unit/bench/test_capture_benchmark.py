"""The capture benchmark's own logic: its row-counting clock, its goals, and what it reads of the proxy and of monitor.

The benchmark itself runs for minutes on a quiet machine (docs/benchmarks.md), never here.
"""

from bench.capture_benchmark import SUMMARY, memory_bounded_by_window, sum_metrics, within
from bench.capture_clock import ROWS_PER_HOUR_ENV, START_ENV, RowClockWriter, row_time
from iris_core.capture import HOUR_S, PREDICTIONS, parse_partition
from serving.capture.spool import Spool

START = 1_796_590_800  # the start of an hour
ROW = [5.1, 3.5, 1.4, 0.2]
NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def test_the_row_clock_passes_an_hour_every_rows_per_hour_rows():
    assert row_time(START, 1000, 0) == START
    assert row_time(START, 1000, 500) == START + HOUR_S / 2
    assert row_time(START, 1000, 3000) == START + 3 * HOUR_S


def test_the_row_clock_writer_puts_each_hours_rows_in_that_hours_partition(tmp_path, monkeypatch):
    monkeypatch.setenv(START_ENV, str(START))
    monkeypatch.setenv(ROWS_PER_HOUR_ENV, "4")
    spool = Spool(tmp_path / "spool", "r1", 10**9)
    spool.open()
    writer = RowClockWriter(spool, "r1", file_rows=1000, file_seconds=3600)
    writer.start()
    for k in range(5):  # two rows each: requests 0-1 in the first hour, 2-3 in the second, 4 in the third
        writer.submit_predictions(
            request_id=f"req-{k}",
            model_name="iris",
            model_version="1",
            names=NAMES,
            rows=[ROW, ROW],
            predictions=[{"prediction": "setosa"}] * 2,
            latency_ms=1.0,
        )
    assert writer.close(timeout=30)
    ready = tmp_path / "spool" / "r1" / "ready"
    hours = sorted(parse_partition(str(path.parent.relative_to(ready))).hour for path in ready.rglob("*.parquet"))
    assert hours == [START, START + HOUR_S, START + 2 * HOUR_S]
    assert all(path.parts[-6] == PREDICTIONS for path in ready.rglob("*.parquet"))


def test_capture_on_meets_the_throughput_goal_only_within_five_percent_of_off():
    assert within(950.0, 1000.0)
    assert not within(949.0, 1000.0)
    assert not within(10.0, 0.0)


def test_monitor_memory_is_bounded_by_the_window_when_it_grows_with_the_rows_read():
    mb = 2**20
    # a tenth of the rows: what it adds to the fixed 300 MB is at most twice a tenth of what the whole adds
    assert memory_bounded_by_window(300 * mb, 420 * mb, 1300 * mb, 0.1)
    assert not memory_bounded_by_window(300 * mb, 1200 * mb, 1300 * mb, 0.1)  # the window paid for the capture
    assert not memory_bounded_by_window(300 * mb, 300 * mb, 300 * mb, 0.1)  # nothing to tell apart


def test_the_proxy_metrics_are_summed_over_their_labels():
    text = (
        "# HELP proxy_predictions_total Rows answered.\n"
        "# TYPE proxy_predictions_total counter\n"
        'proxy_predictions_total{model="iris",class="setosa"} 3.0\n'
        'proxy_predictions_total{model="iris",class="virginica"} 4.0\n'
        "proxy_capture_buffered_rows 2.0\n"
    )
    assert sum_metrics(text) == {"proxy_predictions_total": 7.0, "proxy_capture_buffered_rows": 2.0}


def test_the_monitor_summary_gives_the_rows_and_the_labeled_rows():
    output = (
        "iris version 1: no_drift (1000000 rows)\n"
        "  estimated accuracy from the logged confidences: 0.9100 (an estimate)\n"
        "iris version 1: no_performance_drop (live accuracy 0.9500, 20000 labeled rows)\n"
    )
    assert SUMMARY.findall(output) == [("no_drift", "1000000", ""), ("no_performance_drop", "20000", "labeled ")]
