"""The canary analysis on synthetic outcomes: each check fires on its own breach, and never on too little evidence."""

import math
import re

import pytest

from serving.rollout.analysis import (
    LATENCY_FLOOR_S,
    MIN_CALLS_FOR_P99,
    Comparison,
    Thresholds,
    analyse,
    chi_square_sf,
    class_shift,
    mix_p_value,
)
from serving.upstreams.call_stats import CallStats

LIMITS = Thresholds(
    max_error_rate=0.05, max_latency_ratio=3.0, max_disagreement=0.1, max_class_shift=0.2, min_requests=50
)


def calls(n: int, seconds: float = 0.01, failed: int = 0, classes: dict[str, int] | None = None) -> CallStats:
    """``n`` calls of ``seconds`` each, ``failed`` of them failed; the answered ones spread over ``classes``."""
    stats = CallStats(count_classes=True)
    answers = [name for name, k in (classes or {"setosa": n - failed}).items() for _ in range(k)]
    for i in range(n):
        if i < failed:
            stats.observe(seconds, 1, None)
        else:
            stats.observe(seconds, 1, [{"prediction": answers[(i - failed) % len(answers)]}])
    return stats


GOOD = calls(200, classes={"setosa": 70, "versicolor": 65, "virginica": 65})


def test_a_version_like_the_previous_one_breaches_nothing():
    finding = analyse(
        calls(200, classes={"setosa": 66, "versicolor": 67, "virginica": 67}), GOOD, Comparison(200, 3), LIMITS
    )
    assert not finding.breach
    assert set(finding.figures) == {"error_rate", "p50_ms", "p99_ms", "class_shift", "disagreement"}


def test_a_rise_in_the_error_rate_beyond_the_limit_breaches():
    mixed = {"setosa": 30, "versicolor": 29, "virginica": 29}
    finding = analyse(calls(100, failed=12, classes=mixed), GOOD, Comparison(), LIMITS)
    assert finding.breaches == ["error rate 12.0% vs 0.0% over 100 rows (max rise 5.0%)"]
    assert finding.figures["error_rate"] == {"new": 0.12, "previous": 0.0, "rows": 100}


def test_an_error_rate_no_worse_than_the_previous_versions_does_not_breach():
    assert not analyse(calls(100, failed=12), calls(100, failed=10), Comparison(), LIMITS).breach


def test_latency_several_times_the_previous_versions_breaches_and_close_to_it_does_not():
    slow = analyse(calls(100, seconds=0.2), calls(100, seconds=0.03), Comparison(), LIMITS)
    assert [reason.split()[0] for reason in slow.breaches] == ["p50", "p99"]
    assert slow.figures["p99_ms"]["ratio"] > 3
    assert not analyse(calls(100, seconds=0.06), calls(100, seconds=0.03), Comparison(), LIMITS).breach


def test_a_version_slower_on_every_call_is_caught_by_its_median_when_the_previous_ones_tail_is_noise():
    """A busy machine: the previous version's p99 is 150 ms of noise; the new one takes 120 ms on every call."""
    noisy = calls(100, seconds=0.01)
    for _ in range(3):
        noisy.observe(0.15, 1, [{"prediction": "setosa"}])
    finding = analyse(calls(100, seconds=0.12), noisy, Comparison(), LIMITS)
    assert [reason.split()[0] for reason in finding.breaches] == ["p50"]
    assert finding.figures["p99_ms"]["ratio"] < 3 < finding.figures["p50_ms"]["ratio"]


def test_one_slow_call_among_fewer_than_a_hundred_is_no_p99_however_low_min_requests_is():
    """A good version's first calls on a busy machine: one hiccup of 165 ms among 40 calls of 10 ms."""
    few = Thresholds(**{**LIMITS.__dict__, "min_requests": 30})
    hiccup = calls(40, seconds=0.01)
    hiccup.observe(0.165, 1, [{"prediction": "setosa"}])
    assert hiccup.calls < MIN_CALLS_FOR_P99
    finding = analyse(hiccup, calls(200, seconds=0.01), Comparison(), few)
    assert not finding.breach and "p99_ms" not in finding.figures
    for _ in range(MIN_CALLS_FOR_P99):
        hiccup.observe(0.165, 1, [{"prediction": "setosa"}])
    assert [r.split()[0] for r in analyse(hiccup, calls(200, seconds=0.01), Comparison(), few).breaches] == [
        "p50",
        "p99",
    ], "slow on most calls: both fire once there are enough"


def test_fast_servers_a_few_milliseconds_apart_are_not_called_slower():
    """Both below the floor count as the floor: 2 ms against 15 ms is no breach."""
    assert LATENCY_FLOOR_S >= 0.015
    assert not analyse(calls(100, seconds=0.015), calls(100, seconds=0.002), Comparison(), LIMITS).breach


def test_a_shifted_class_mix_breaches():
    shifted = calls(200, classes={"setosa": 10, "versicolor": 10, "virginica": 180})
    finding = analyse(shifted, GOOD, Comparison(), LIMITS)
    [breach] = finding.breaches
    assert breach.startswith(f"class mix shifted by {class_shift(shifted.classes, GOOD.classes):.2f} (max 0.2), ")
    assert re.search(r"chi-square p-value \d\.\de-\d+ < 0\.001$", breach)


def test_a_class_mix_apart_by_chance_on_few_rows_does_not_breach():
    """A good version's first 30 canary rows of an even mix: 2, 12, 16 is 0.27 apart, and chance (p 0.011)."""
    few = Thresholds(**{**LIMITS.__dict__, "min_requests": 30})
    chance = calls(30, classes={"setosa": 2, "versicolor": 12, "virginica": 16})
    even = calls(120, classes={"setosa": 40, "versicolor": 40, "virginica": 40})
    finding = analyse(chance, even, Comparison(), few)
    assert finding.figures["class_shift"]["tvd"] > 0.25 and finding.figures["class_shift"]["p_value"] > 0.01
    assert not finding.breach


def test_the_chi_square_p_value_is_scipys():
    from scipy.stats import chi2, chi2_contingency

    for df in range(1, 7):
        for x in (0.01, 1.0, 4.5, 20.0, 80.0):
            assert math.isclose(chi_square_sf(x, df), chi2.sf(x, df), rel_tol=1e-9), (x, df)
    table = [[4, 12, 14], [40, 40, 40]]
    expected = chi2_contingency(table, correction=False).pvalue
    assert math.isclose(mix_p_value(dict(zip("abc", table[0])), dict(zip("abc", table[1]))), expected, rel_tol=1e-9)


def test_disagreeing_on_compared_rows_beyond_the_limit_breaches():
    finding = analyse(calls(200), calls(200), Comparison(rows=100, disagreed=40), LIMITS)
    assert finding.breaches == ["disagreed with the previous version on 40.0% of 100 rows (max 10%)"]


def test_a_version_slow_on_every_call_makes_few_calls_of_many_rows_and_its_median_gives_it_away():
    slow = CallStats()
    for _ in range(12):  # requests pile up behind each slow call: 12 calls carried 120 rows
        slow.observe(0.6, 10, [{"prediction": "setosa"}] * 10)
    finding = analyse(slow, calls(200, seconds=0.01), Comparison(), LIMITS)
    assert [reason.split()[0] for reason in finding.breaches] == ["p50"], "too few calls for a p99"
    assert "p99_ms" not in finding.figures


def test_a_handful_of_calls_decides_no_latency_check_however_many_rows_they_carry():
    few = CallStats()
    for seconds in (0.5, 0.5, 0.5, 0.5, 0.5, 0.01, 0.01, 0.01, 0.01):  # nine calls of 20 rows, a busy moment
        few.observe(seconds, 20, [{"prediction": "setosa"}] * 20)
    finding = analyse(few, calls(200), Comparison(), LIMITS)
    assert not finding.breach and "p50_ms" not in finding.figures


@pytest.mark.parametrize(
    "candidate, baseline, compared",
    [
        (calls(49, failed=49), GOOD, Comparison()),  # every call failed, but too few of them
        (calls(49, seconds=5.0), GOOD, Comparison()),
        (calls(200, seconds=5.0), calls(49), Comparison()),  # too few calls of the previous version to compare
        (calls(49, classes={"virginica": 49}), GOOD, Comparison()),
        (GOOD, GOOD, Comparison(rows=49, disagreed=49)),
    ],
)
def test_no_check_fires_before_both_sides_have_the_minimum_count(candidate, baseline, compared):
    assert not analyse(candidate, baseline, compared, LIMITS).breach


def test_stats_since_a_snapshot_count_only_what_came_after():
    stats = calls(30, failed=5)
    before = stats.snapshot()
    stats.observe(0.5, 3, None)
    stats.observe(0.5, 1, [{"prediction": "virginica"}])
    window = stats.since(before)
    assert (window.calls, window.failed, window.rows, window.failed_rows) == (2, 1, 4, 3)
    assert window.classes == {"virginica": 1} and window.error_rate == 0.75
    assert window.quantile_s(0.5) == pytest.approx(0.5, rel=0.25)


def test_classes_are_counted_only_while_asked_for():
    stats = CallStats()
    stats.observe(0.01, 1, [{"prediction": "setosa"}])
    assert stats.classes == {} and stats.calls == 1
