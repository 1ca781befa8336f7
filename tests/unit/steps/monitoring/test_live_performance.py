"""Joining labels with logged predictions, and what live performance the labeled rows show: pure functions."""

import pandas as pd
import pytest

from iris_core.contract import PerformanceStatus
from iris_core.table.iris import IRIS
from steps.common.config import PerformanceThresholds
from steps.monitoring.live_performance import assess_performance, estimated_accuracy, join, performance_lines

FEATURES = IRIS.feature_names

ROW = dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2]))


def prediction(request_id, row=None, prediction="setosa", version="1", ts="2026-01-01T00:00:00.000Z", **extra):
    record = {
        "ts": ts,
        "request_id": request_id,
        "model_name": "iris",
        "model_version": version,
        "features": {**ROW, **extra},
        "prediction": prediction,
        "confidence": 0.9,
    }
    if row is not None:
        record["row"] = row
    return record


def label(request_id, row=0, name="setosa", ts="2026-01-02T00:00:00.000Z"):
    return {"ts": ts, "request_id": request_id, "row": row, "label": name}


def test_labels_join_their_prediction_by_request_id_and_row():
    predictions = [prediction("a", 0, "setosa"), prediction("a", 1, "virginica"), prediction("b", 0, "versicolor")]
    labels = [label("a", 1, "versicolor"), label("b", 0, "versicolor")]
    joined = join(labels, predictions)
    assert list(
        zip(joined.frame["request_id"], joined.frame["row"], joined.frame["prediction"], joined.frame["label"])
    ) == [
        ("a", 1, "virginica", "versicolor"),
        ("b", 0, "versicolor", "versicolor"),
    ]
    assert (joined.labels, joined.duplicates, joined.unmatched) == (2, 0, 0)


def test_a_label_matching_no_logged_prediction_is_counted_not_guessed():
    joined = join([label("a", 0), label("never-logged", 0), label("a", 7)], [prediction("a", 0)])
    assert len(joined.frame) == 1 and joined.unmatched == 2


def test_a_rows_first_label_counts_and_later_ones_are_duplicates():
    joined = join([label("a", 0, "setosa"), label("a", 0, "virginica")], [prediction("a", 0)])
    assert list(joined.frame["label"]) == ["setosa"] and joined.duplicates == 1


def test_rows_of_a_log_without_row_fields_take_their_place_in_the_request():
    predictions = [prediction("a", prediction="setosa"), prediction("a", prediction="virginica"), prediction("b")]
    joined = join([label("a", 1, "virginica"), label("b", 0)], predictions)
    assert list(joined.frame["prediction"]) == ["virginica", "setosa"]


def test_a_reused_request_id_goes_with_the_latest_answer_before_the_label():
    predictions = [
        prediction("reused", 0, "setosa", ts="2026-01-01T00:00:00.000Z"),
        prediction("reused", 0, "versicolor", ts="2026-01-01T12:00:00.000Z"),
        prediction("reused", 0, "virginica", ts="2026-01-03T00:00:00.000Z"),
    ]
    joined = join([label("reused", 0, ts="2026-01-02T00:00:00.000Z")], predictions)
    assert list(joined.frame["prediction"]) == ["versicolor"]
    early = join([label("reused", 0, ts="2025-12-31T00:00:00.000Z")], predictions)
    assert list(early.frame["prediction"]) == ["setosa"], "with every answer after the label, the first one"


def test_the_answer_a_label_means_is_chosen_by_time_whatever_order_the_files_came_in():
    newer = prediction("reused", 0, "versicolor", ts="2026-01-01T12:00:00.000Z")
    older = prediction("reused", 0, "setosa", ts="2026-01-01T00:00:00.000Z")
    after = prediction("reused", 0, "virginica", ts="2026-01-03T00:00:00.000Z")
    for order in ([newer, older, after], [after, older, newer], [older, after, newer]):
        joined = join([label("reused", 0, ts="2026-01-02T00:00:00.000Z")], order)
        assert list(joined.frame["prediction"]) == ["versicolor"], order


def test_rows_are_checked_per_version_and_others_listed_apart():
    predictions = [
        prediction("a", 0, version="1"),
        prediction("b", 0, version="2"),
        prediction("c", 0, version="unknown"),
    ]
    joined = join([label("a"), label("b"), label("c")], predictions)
    assert list(joined.of_version("iris", "1").frame["request_id"]) == ["a", "c"]
    assert joined.by_version() == {"iris/1": 1, "iris/2": 1, "iris/unknown": 1}


def frame(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"label": [t for t, _ in pairs], "prediction": [p for _, p in pairs]})


THRESHOLDS = PerformanceThresholds(min_live_accuracy=0.85, min_labeled_rows=10)


def test_accuracy_below_the_floor_with_enough_labels_is_a_performance_drop_with_its_reason():
    pairs = [("setosa", "setosa")] * 6 + [("setosa", "versicolor")] * 4 + [("virginica", "virginica")] * 2
    performance = assess_performance(frame(pairs), THRESHOLDS, IRIS.classes)
    assert performance.status == PerformanceStatus.PERFORMANCE_DROP
    assert performance.accuracy == pytest.approx(8 / 12)
    assert performance.reasons(THRESHOLDS) == ["live accuracy 0.6667 < min_live_accuracy 0.85 on 12 labeled rows"]
    setosa = performance.classes["setosa"]
    assert (setosa.precision, setosa.recall, setosa.support) == (1.0, 0.6, 10)
    assert performance.classes["versicolor"].precision == 0.0
    assert performance.confusion == [[6, 4, 0], [0, 0, 0], [0, 0, 2]]


def test_accuracy_at_or_above_the_floor_is_no_drop_and_too_few_labels_give_no_verdict():
    good = [("setosa", "setosa")] * 17 + [("setosa", "virginica")] * 3
    assert assess_performance(frame(good), THRESHOLDS).status == PerformanceStatus.NO_PERFORMANCE_DROP
    few = [("setosa", "versicolor")] * 9
    performance = assess_performance(frame(few), THRESHOLDS)
    assert performance.status == PerformanceStatus.INSUFFICIENT_LABELS and performance.accuracy == 0.0
    assert assess_performance(frame([]), THRESHOLDS).status == PerformanceStatus.INSUFFICIENT_LABELS


def test_the_estimate_is_the_mean_confidence_and_the_report_calls_it_an_estimate():
    assert estimated_accuracy(pd.Series([0.9, 0.7])) == pytest.approx(0.8)
    assert estimated_accuracy(pd.Series([], dtype=float)) is None
    from steps.monitoring.live_performance import estimate_lines

    [_, line] = estimate_lines(0.8, 2, 0.9667)
    assert line.startswith("Estimated accuracy (an estimate, not a measurement") and "0.9667" in line


def test_the_report_section_counts_every_kind_of_label_and_shows_the_matrix():
    joined = join([label("a", 0, "versicolor"), label("a", 0), label("zz")], [prediction("a", 0, "setosa")])
    performance = assess_performance(joined.frame, THRESHOLDS, IRIS.classes)
    text = "\n".join(
        performance_lines(performance, joined, THRESHOLDS, version="1", source="feedback.jsonl", other_versions={})
    )
    assert "## Live performance: insufficient_labels" in text
    assert "3 labels, 1 of them for rows version 1 answered; 1 duplicates, 1 matching no logged prediction" in text
    assert "| versicolor | 1 | 0 | 0 |" in text
