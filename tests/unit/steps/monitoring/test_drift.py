"""The drift verdict as pure functions, at the default thresholds of the ``monitor`` step."""

import numpy as np
import pandas as pd
import pytest

from iris_core.contract import DriftStatus
from iris_core.records import read_log
from iris_core.table.iris import IRIS
from steps.common.config import DriftThresholds as Thresholds
from steps.monitoring.drift import assess, live_rows, psi
from tests.helpers.traffic import write_log

FEATURES = IRIS.feature_names

DRIFT, NO_DRIFT, INSUFFICIENT_DATA = DriftStatus.DRIFT, DriftStatus.NO_DRIFT, DriftStatus.INSUFFICIENT_DATA

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_held_out_iris_rows_show_no_drift(iris_split, seed):
    split = iris_split(seed)
    assessment = assess(split.train, split.scored(split.holdout), Thresholds(), IRIS)
    assert assessment.status == NO_DRIFT, assessment.reasons(Thresholds(), IRIS)
    assert assessment.rows == len(split.holdout) == 30


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("seed", range(3))
def test_one_feature_shifted_by_one_standard_deviation_in_200_rows_is_drift(iris_split, feature, seed):
    split = iris_split(seed)
    assessment = assess(split.train, split.scored(split.shifted(feature, rows=200, seed=seed)), Thresholds(), IRIS)
    assert assessment.status == DRIFT
    assert feature in assessment.drifted_features
    assert assessment.features[feature].mean_shift == pytest.approx(1.0, abs=0.35)


def test_fewer_rows_than_min_rows_give_no_verdict(iris_split):
    split = iris_split(0)
    live = split.scored(split.shifted("sepal_width", rows=29, seed=0))
    assessment = assess(split.train, live, Thresholds(min_rows=30), IRIS)
    assert assessment.status == INSUFFICIENT_DATA
    assert assessment.features == {} and assessment.class_mix is None and assessment.rows == 29


def test_an_empty_log_gives_no_verdict(iris_split):
    assessment = assess(iris_split(0).train, live_rows([], "iris", "2", FEATURES).frame, Thresholds(), IRIS)
    assert assessment.status == INSUFFICIENT_DATA and assessment.rows == 0


def test_traffic_of_a_single_class_shifts_the_predicted_class_mix(iris_split):
    split = iris_split(1)
    setosa_only = split.train[split.train["species"] == "setosa"].sample(200, replace=True, random_state=1)
    assessment = assess(split.train, split.scored(setosa_only), Thresholds(), IRIS)
    mix = assessment.class_mix
    assert mix.shifted and assessment.status == DRIFT
    assert mix.live["setosa"] == 1.0 and mix.tvd == pytest.approx(2 / 3, abs=0.01)


def test_mean_confidence_is_the_average_logged_confidence(iris_split):
    split = iris_split(2)
    live = split.scored(split.holdout)
    assert assess(split.train, live, Thresholds(), IRIS).mean_confidence == pytest.approx(live["confidence"].mean())


def test_a_small_significant_shift_below_the_psi_threshold_is_not_drift():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({f: rng.normal(5, 1, 5000) for f in FEATURES}).assign(species="setosa")
    live = pd.DataFrame({f: rng.normal(5.1, 1, 20000) for f in FEATURES}).assign(prediction="setosa", confidence=0.9)
    assessment = assess(reference, live, Thresholds(), IRIS)
    assert all(r.ks_pvalue < 0.01 for r in assessment.features.values())
    assert assessment.status == NO_DRIFT


def test_psi_of_a_sample_against_itself_is_zero_and_grows_with_the_shift():
    values = np.linspace(0, 10, 200)
    assert psi(values, values) == pytest.approx(0.0, abs=1e-12)
    assert 0 < psi(values, values + 1) < psi(values, values + 3)


def test_only_rows_of_the_checked_version_are_compared_and_unversioned_rows_count_as_it(iris_split, tmp_path):
    split = iris_split(0)
    log = tmp_path / "predictions.jsonl"
    write_log(log, split.scored(split.holdout.head(5)), model_version="2")
    write_log(log, split.scored(split.holdout.head(3)), model_version=None)
    write_log(log, split.scored(split.holdout.head(1)), model_version="unknown")
    write_log(log, split.scored(split.holdout.head(4)), model_version="1")
    write_log(log, split.scored(split.holdout.head(2)), model_version="2", model_name="other")
    live = live_rows(read_log(log).records, "iris", "2", FEATURES)
    assert len(live.frame) == 9
    assert live.others == {"iris/1": 4, "other/2": 2}
