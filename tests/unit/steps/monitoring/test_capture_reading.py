"""The steps on a capture: the same rows and labels as the logs of the same traffic, a window read by its partitions,
labels joined across replicas and files, and ``monitor``, ``cycle`` and ``retrain`` taking it where they take a log.

The captures are written by the proxy's own capture writer (``serving.capture.offline``), so
the files and their layout are what a proxy writes; the tests against a real tracking
server's artifact store are ``tests/integration/team/test_capture_loop.py`` and ``tests/integration/serving/test_capture_store.py``.
"""

import json

import pandas as pd
from click.testing import CliRunner

from iris_core.capture import HOUR_S, parse_partition
from iris_core.contract import CYCLE_EXPERIMENT
from iris_core.table.iris import IRIS
from steps import cycle, monitor
from steps.common.errors import InvalidParameter
from steps.monitor import read_predictions
from steps.monitoring.capture_reading import read_capture
from steps.monitoring.capture_source import CaptureSource
from steps.monitoring.labels import read_labels
from steps.monitoring.window import WHOLE, Window
from tests.helpers.tracking import runs
from tests.helpers.traffic import (
    CAPTURE_START,
    holdout_of,
    new_cultivar,
    scored_by,
    write_capture,
    write_labels,
    write_log,
)

FEATURES, LABEL = IRIS.feature_names, IRIS.label
DATA = "data/iris.csv"


def iso(epoch: float) -> str:
    return pd.Timestamp(epoch, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_capture_and_the_logs_of_the_same_traffic_give_the_same_live_rows_and_the_same_labels(tmp_path, iris_split):
    split = iris_split(42)
    traffic = split.scored(pd.concat([split.holdout, split.train.head(30)], ignore_index=True))
    truth = list(pd.concat([split.holdout, split.train.head(30)], ignore_index=True)[LABEL])
    labels = [(f"req-{i}", 0, species) for i, species in enumerate(truth) if i % 3]
    labels += [(labels[0][0], 0, "virginica"), ("never-answered", 0, "setosa")]  # a duplicate, an unmatched label
    log = write_log(tmp_path / "predictions.jsonl", traffic)
    feedback = write_labels(tmp_path / "feedback.jsonl", labels)
    # Two replicas: the first half answered by web-1, the second by web-2, every label taken by the other one.
    half = len(traffic) // 2
    first, second = traffic.iloc[:half], traffic.iloc[half:].reset_index(drop=True)
    capture = tmp_path / "capture"
    write_capture(capture, first, replica="web-1", file_rows=7, labels=[x for x in labels if _index(x) >= half])
    write_capture(
        capture,
        second,
        replica="web-2",
        first=half,
        start=CAPTURE_START + half,
        labels=[x for x in labels if _index(x) < half],
    )

    read = read_capture(CaptureSource(str(capture)), "iris", WHOLE, "2", FEATURES, CaptureSource(str(capture)))
    from_logs = read_predictions(log, "iris", "2", FEATURES)
    columns = [*FEATURES, "prediction", "confidence"]
    pd.testing.assert_frame_equal(
        read.live.frame[columns].sort_values(columns).reset_index(drop=True),
        from_logs.frame[columns].sort_values(columns).reset_index(drop=True),
    )
    joined = read_labels(feedback, log)
    key = ["request_id", "row"]
    compared = [*FEATURES, "prediction", "label", "request_id", "row"]
    pd.testing.assert_frame_equal(
        read.labeled.frame[compared].sort_values(key).reset_index(drop=True),
        joined.frame[compared].sort_values(key).reset_index(drop=True),
    )
    assert (read.labeled.labels, read.labeled.duplicates, read.labeled.unmatched) == (len(labels), 1, 1)
    assert read.files > 2, "several files of each replica"


def _index(label) -> int:
    request_id = label[0]
    return int(request_id.rsplit("-", 1)[1]) if request_id.startswith("req-") else -1


def test_a_window_reads_only_the_partitions_it_meets_and_only_its_rows(tmp_path, iris_split, monkeypatch):
    split = iris_split(42)
    traffic = split.scored(split.holdout)  # 30 rows, ten minutes apart: five hours
    capture = write_capture(tmp_path / "capture", traffic, spacing=600)
    hours = sorted({parse_partition(p.parent.relative_to(capture).as_posix()).hour for p in capture.rglob("*.parquet")})
    assert hours == [CAPTURE_START + h * HOUR_S for h in range(5)]
    for path in capture.rglob("*.parquet"):  # the hours outside the window are not even readable
        if parse_partition(path.parent.relative_to(capture).as_posix()).hour in (hours[0], hours[4]):
            path.write_bytes(b"not parquet")
    opened = []
    original = CaptureSource._read
    monkeypatch.setattr(
        CaptureSource,
        "_read",
        staticmethod(lambda path, file, columns: opened.append(file) or original(path, file, columns)),
    )
    window = Window(CAPTURE_START + 1.5 * HOUR_S, CAPTURE_START + 3.5 * HOUR_S)
    read = read_capture(CaptureSource(str(capture)), "iris", window, "2", FEATURES)
    assert sorted({file.partition.hour for file in opened}) == hours[1:4]
    assert len(read.live.frame) == 12  # 09:... + 1.5 h to + 3.5 h: rows 9 to 20
    times = read.live.frame["ts"].map(lambda ts: ts.timestamp())
    assert times.min() >= window.since and times.max() < window.until


def test_labels_are_read_from_the_windows_start_on_and_kept_only_for_its_predictions(tmp_path, iris_split):
    split = iris_split(42)
    traffic = split.scored(split.holdout)
    capture = tmp_path / "capture"
    write_capture(capture, traffic, spacing=600)
    labels = [(f"req-{i}", 0, species) for i, species in enumerate(split.holdout[LABEL])]
    write_capture(capture, traffic.head(0), replica="web-2", labels=labels, labels_at=CAPTURE_START + 30 * HOUR_S)
    window = Window(CAPTURE_START + 2 * HOUR_S, CAPTURE_START + 3 * HOUR_S)
    read = read_capture(CaptureSource(str(capture)), "iris", window, "2", FEATURES, CaptureSource(str(capture)))
    assert len(read.labeled.frame) == 6 == len(read.live.frame), "a day late, the labels of the window's rows"
    assert read.labeled.unmatched == 24, "the labels of other hours' predictions"


def test_the_steps_refuse_a_window_for_a_log_and_a_capture_mixed_with_a_log(tmp_path, iris_split):
    log = write_log(tmp_path / "predictions.jsonl", iris_split(42).scored(iris_split(42).holdout))
    capture = write_capture(tmp_path / "capture", iris_split(42).scored(iris_split(42).holdout))
    cases = {
        ("--predictions", str(log), "--hours", "2"): "choose a window of a capture; a log is read whole",
        ("--predictions", str(capture), "--since", "yesterday"): "--since must be ISO 8601",
        ("--predictions", str(capture), "--since", "2026-12-06", "--hours", "1"): "give --since or --hours, not both",
        ("--predictions", str(log), "--feedback", str(capture)): "give --predictions a capture too",
        ("--predictions", str(capture), "--feedback", str(log)): "give --feedback the capture too",
        ("--predictions", str(tmp_path / "none")): "does not exist",
    }
    for args, message in cases.items():
        for command in (monitor.main, cycle.main):
            result = CliRunner().invoke(command, [*args, "--data-path", DATA])
            assert isinstance(result.exception, InvalidParameter), (args, result.output)
            assert message in str(result.exception) and result.exception.exit_code == 2


def test_cycle_reads_a_window_of_the_capture_retrains_on_its_labeled_rows_and_names_the_capture_as_their_source(
    registry, tmp_path
):
    from tests.helpers.tracking import REPO

    before = scored_by("models:/iris/2", holdout_of(registry, "2").sample(60, replace=True, random_state=1))
    cultivar = new_cultivar(60, seed=1)
    during = scored_by("models:/iris/2", pd.concat([holdout_of(registry, "2").head(20), cultivar], ignore_index=True))
    truth = list(holdout_of(registry, "2").head(20)[LABEL]) + list(cultivar[LABEL])
    capture = tmp_path / "capture"
    write_capture(capture, before, prefix="old", start=CAPTURE_START - 5 * HOUR_S, spacing=60)  # before the window
    write_capture(capture, during, replica="web-1", spacing=40)
    write_capture(
        capture,
        during.head(0),
        replica="web-2",
        labels=[(f"req-{i}", 0, species) for i, species in enumerate(truth)],
        labels_at=CAPTURE_START + 2 * HOUR_S,
    )
    since, until = iso(CAPTURE_START), iso(CAPTURE_START + 3 * HOUR_S)
    args = ["--predictions", str(capture), "--feedback", str(capture), "--since", since, "--until", until]
    result = CliRunner().invoke(cycle.main, [*args, "--data-path", str(REPO / DATA)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "iris version 2: performance_drop (live accuracy 0.2500, 80 labeled rows)" in out
    assert "trained models:/iris/4 on the base data and 80 labeled production rows" in out
    client = registry.client()
    [run] = runs(client, CYCLE_EXPERIMENT, cycle_decision="retrained")
    training = client.get_run(client.get_model_version("iris", "4").tags["training_run_id"])
    [dataset] = training.inputs.dataset_inputs
    source = json.loads(dataset.dataset.source)["tags"]
    assert (source["capture"], source["since"], source["until"]) == (str(capture), since, until)
    assert (training.data.params["since"], training.data.params["until"]) == (since, until)
    [checked] = client.search_runs([run.info.experiment_id], "attributes.run_name = 'monitor'")
    assert checked.data.params["predictions"] == str(capture)
    assert (checked.data.params["since"], checked.data.params["until"]) == (since, until)
