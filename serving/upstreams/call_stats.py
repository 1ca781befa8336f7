"""What each upstream counts at the seam every forwarder calls (``serving.upstreams.servers.Upstream.score``).

The canary analysis (``serving.rollout.analysis``) reads these counts: the router takes a
snapshot when a rollout starts and analyses the difference.
"""

import math
from bisect import bisect_left
from dataclasses import dataclass, field

from iris_core.table.models import answer_class

# Call latency buckets, 0.5 ms to ~73 s in steps of 25%: a p99 read from them is within 25%.
LATENCY_BOUNDS_S = tuple(0.0005 * 1.25**i for i in range(54))


@dataclass
class CallStats:
    """Calls to one model server: how many, with how many rows, which failed, how long they took, which classes.

    ``count_classes`` is switched on only while a rollout analyses the upstream: counting
    classes costs a loop over the rows of every call.
    """

    calls: int = 0
    failed: int = 0  # calls that failed
    rows: int = 0  # rows sent (a single-row request is one row: rows count requests)
    failed_rows: int = 0  # rows of the calls that failed: requests a client saw fail
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_S) + 1))
    classes: dict[str, int] = field(default_factory=dict)  # answered rows by predicted class
    count_classes: bool = False

    def observe(self, seconds: float, rows: int, predictions: list[dict] | None) -> None:
        """One call of ``rows`` rows; ``predictions`` is None when it failed."""
        self.calls += 1
        self.rows += rows
        self.latency[bisect_left(LATENCY_BOUNDS_S, seconds)] += 1
        if predictions is None:
            self.failed += 1
            self.failed_rows += rows
        elif self.count_classes:
            classes = self.classes
            for answer in predictions:
                name = answer_class(answer)
                classes[name] = classes.get(name, 0) + 1

    def snapshot(self) -> "CallStats":
        return CallStats(self.calls, self.failed, self.rows, self.failed_rows, list(self.latency), dict(self.classes))

    def since(self, earlier: "CallStats") -> "CallStats":
        """What happened after ``earlier`` (a snapshot of the same stats)."""
        classes = {k: n - earlier.classes.get(k, 0) for k, n in self.classes.items()}
        return CallStats(
            self.calls - earlier.calls,
            self.failed - earlier.failed,
            self.rows - earlier.rows,
            self.failed_rows - earlier.failed_rows,
            [a - b for a, b in zip(self.latency, earlier.latency)],
            {k: n for k, n in classes.items() if n},
        )

    @property
    def answered_rows(self) -> int:
        return sum(self.classes.values())

    @property
    def error_rate(self) -> float:
        """The share of rows whose call failed."""
        return self.failed_rows / self.rows if self.rows else 0.0

    def quantile_s(self, q: float) -> float | None:
        total = sum(self.latency)
        if not total:
            return None
        rank, seen = q * total, 0
        for bound, count in zip((*LATENCY_BOUNDS_S, math.inf), self.latency):
            seen += count
            if seen >= rank:
                return bound
        return math.inf
