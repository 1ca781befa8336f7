"""The canary analysis: is the new version worse than the one it replaces? Pure logic, no I/O.

During a rollout the router compares the new version (the candidate) with the previous
one (the baseline), which stays warm, on four figures:

- **upstream error rate**: the share of the candidate's rows (requests, for single-row
  ones) whose call to its model server failed (502, 503 or 504), against the baseline's over
  the same window;
- **latency** of those calls: the median and the p99, each as a ratio to the baseline's
  (both raised to a floor of ``LATENCY_FLOOR_S``, so two fast servers a few milliseconds
  apart are not "3x slower"). The median is there because on a busy machine the baseline's
  p99 is the machine's noise, which hides a version that is slower on every call;
- **predicted-class mix**: the total variation distance between the classes the two
  answered (the baseline's answers come from the traffic it served in the window and from
  the copies it scored in the background), in requests: a request of n rows adds 1/n to
  the class of each of its rows, so that a client's large requests weigh no more than
  anyone's (``serving.rollout.delivery.Delivery`` counts them). It counts only when a chi-square
  test of the two mixes says they differ (p < ``CLASS_SHIFT_ALPHA``): the analysis looks again every
  second, and a few dozen rows of one version drift 0.2 apart by chance sooner or later, as
  the monitor step's class-mix rule also knows;
- **disagreement**: on a sample of the candidate's requests that the baseline also scored
  in the background, the share of rows where their classes differ, averaged over the
  requests (each weighs one, whatever its rows).

Each check fires only once both sides have ``min_requests`` rows in the window (the error
rate: the candidate alone), and the latency checks only with enough calls to read a
percentile from: ``MIN_CALLS_FOR_MEDIAN`` for the median, ``min_requests`` and at least
``MIN_CALLS_FOR_P99`` for the p99 (of fewer calls, the p99 is the slowest one: on a busy
machine, one scheduling hiccup). So a handful of slow calls on a busy machine cannot roll
back a good version, while a version slow on every call, which makes few calls carrying
many rows, is caught by its median.
``analyse`` answers a ``Finding`` with every figure, whether or not it breached.

It reads the ``CallStats`` (``serving.upstreams.call_stats``) each upstream counts; the router
takes a snapshot when a rollout starts and analyses the difference.
"""

import math
from dataclasses import dataclass

from serving.upstreams.call_stats import CallStats

LATENCY_FLOOR_S = 0.02  # latencies below this count as this for the ratio
MIN_CALLS_FOR_MEDIAN = 10
MIN_CALLS_FOR_P99 = 100  # the p99 of 100 calls is the second slowest, not the slowest
CLASS_SHIFT_ALPHA = 0.001  # small: the same rollout is analysed every second


@dataclass(frozen=True)
class Thresholds:
    """When the candidate counts as worse; the defaults are ``serving.config.ServingConfig``'s."""

    max_error_rate: float  # largest rise in the error rate over the baseline's (0.05: 5 points)
    max_latency_ratio: float  # largest median or p99 latency as a multiple of the baseline's
    max_disagreement: float  # largest share of rows answered with another class than the baseline's
    max_class_shift: float  # largest total variation distance between the two class mixes
    min_requests: int  # rows (requests) each side needs before a check may fire

    @classmethod
    def of(cls, config) -> "Thresholds":
        return cls(
            config.max_error_rate,
            config.max_latency_ratio,
            config.max_disagreement,
            config.max_class_shift,
            config.min_requests,
        )


@dataclass(frozen=True)
class Comparison:
    """Rows both versions scored: the candidate for a client, the baseline on a copy in the background."""

    rows: int = 0  # rows both answered
    disagreed: int = 0

    @property
    def disagreement(self) -> float:
        return self.disagreed / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class Finding:
    """The analysis at one moment: the checks that breached (none: keep going) and every figure measured."""

    breaches: list[str]
    figures: dict

    @property
    def breach(self) -> bool:
        return bool(self.breaches)


def class_shift(a: dict[str, int], b: dict[str, int]) -> float:
    """Total variation distance between two class mixes (0: the same, 1: no class in common)."""
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return 0.0
    return 0.5 * sum(abs(a.get(k, 0) / total_a - b.get(k, 0) / total_b) for k in set(a) | set(b))


def mix_p_value(a: dict[str, int], b: dict[str, int]) -> float:
    """The p-value of Pearson's chi-square test that two class mixes come from one distribution."""
    names = [k for k in set(a) | set(b) if a.get(k, 0) + b.get(k, 0)]
    total_a, total_b = sum(a.get(k, 0) for k in names), sum(b.get(k, 0) for k in names)
    if len(names) < 2 or not total_a or not total_b:
        return 1.0
    total, statistic = total_a + total_b, 0.0
    for k in names:
        column = a.get(k, 0) + b.get(k, 0)
        for observed, row in ((a.get(k, 0), total_a), (b.get(k, 0), total_b)):
            expected = row * column / total
            statistic += (observed - expected) ** 2 / expected
    return chi_square_sf(statistic, len(names) - 1)


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable of ``df`` (a whole number of) degrees of freedom, in closed form."""
    h = x / 2
    if df % 2 == 0:
        term = total = math.exp(-h)
        for j in range(1, df // 2):
            term *= h / j
            total += term
        return total
    total, term = math.erfc(math.sqrt(h)), math.exp(-h) * math.sqrt(h) * 2 / math.sqrt(math.pi)
    for j in range((df - 1) // 2):
        total += term
        term *= h / (j + 1.5)
    return total


def analyse(candidate: CallStats, baseline: CallStats, compared: Comparison, limits: Thresholds) -> Finding:
    """Compare the candidate's window with the baseline's; each check fires only with enough of both."""
    breaches, figures = [], {}
    need = limits.min_requests

    if candidate.rows >= need:
        baseline_rate = baseline.error_rate if baseline.rows >= need else 0.0
        rise = candidate.error_rate - baseline_rate
        figures["error_rate"] = {"new": candidate.error_rate, "previous": baseline_rate, "rows": candidate.rows}
        if rise > limits.max_error_rate:
            breaches.append(
                f"error rate {candidate.error_rate:.1%} vs {baseline_rate:.1%} over {candidate.rows} rows "
                f"(max rise {limits.max_error_rate:.1%})"
            )

    enough_rows = candidate.rows >= need and baseline.rows >= need
    for name, q, calls in (("p50", 0.5, MIN_CALLS_FOR_MEDIAN), ("p99", 0.99, max(need, MIN_CALLS_FOR_P99))):
        if enough_rows and candidate.calls >= calls and baseline.calls >= calls:
            new, old = candidate.quantile_s(q), baseline.quantile_s(q)
            ratio = max(new, LATENCY_FLOOR_S) / max(old, LATENCY_FLOOR_S)
            figures[f"{name}_ms"] = {"new": _ms(new), "previous": _ms(old), "ratio": round(ratio, 2)}
            if ratio > limits.max_latency_ratio:
                breaches.append(
                    f"{name} latency {_ms(new):g} ms vs {_ms(old):g} ms, {ratio:.1f}x "
                    f"(max {limits.max_latency_ratio:g}x)"
                )

    if candidate.answered_rows >= need and baseline.answered_rows >= need:
        shift = class_shift(candidate.classes, baseline.classes)
        p_value = mix_p_value(candidate.classes, baseline.classes)
        figures["class_shift"] = {
            "tvd": round(shift, 4),
            "p_value": float(f"{p_value:.3g}"),
            "new": {name: round(n, 2) for name, n in candidate.classes.items()},
            "previous": {name: round(n, 2) for name, n in baseline.classes.items()},
        }
        if shift > limits.max_class_shift and p_value < CLASS_SHIFT_ALPHA:
            breaches.append(
                f"class mix shifted by {shift:.2f} (max {limits.max_class_shift:g}), "
                f"chi-square p-value {p_value:.1e} < {CLASS_SHIFT_ALPHA:g}"
            )

    if compared.rows >= need:
        figures["disagreement"] = {"share": round(compared.disagreement, 4), "rows": compared.rows}
        if compared.disagreement > limits.max_disagreement:
            breaches.append(
                f"disagreed with the previous version on {compared.disagreement:.1%} of {compared.rows} rows "
                f"(max {limits.max_disagreement:.0%})"
            )
    return Finding(breaches, figures)


def _ms(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    return round(seconds * 1000, 1) if math.isfinite(seconds) else math.inf
