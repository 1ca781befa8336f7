"""Shadow evidence: how a challenger answered live traffic beside the live version, as model-version tags.

A serving proxy run with ``--shadow challenger`` sends copies of live requests to the
challenger and compares its classes with the live version's. Several proxies may shadow
the same challenger, and each restarts now and then, so the counts are kept per proxy and
combined by whoever reads them:

- each proxy writes only its own tag, ``shadow.<proxy id>.v<live version>``, holding its
  cumulative counts as JSON. Writing a total again is idempotent, so a retried or lost
  write never counts a row twice, and no proxy ever writes another's counts;
- ``combine`` sums the counts of every proxy that compared against the same live version:
  rows, agreeing rows and errors add up, and the latency histograms add bucket by bucket,
  so the combined p99 is the p99 of all calls (to the bucket's resolution), not an average
  of percentiles;
- the summary tags (``shadow_rows``, ``shadow_agreement``, ``shadow_error_rate``,
  ``shadow_p99_ms``, ``shadow_against``) are that combination, rewritten by each proxy when
  it writes its own tag, for people and ``registry_tools show``. Two proxies writing them at
  once leave one of two recent sums, so the gate combines the per-proxy tags itself.

Agreement is the share of shadowed rows where the challenger answered the live version's
class; a row the challenger failed to score is not an agreeing row.
"""

import json
import re
from bisect import bisect_left
from dataclasses import dataclass, field

from iris_core.contract import Tag

# Upper bounds of the challenger's call latency buckets, in ms; the last bucket is beyond them.
LATENCY_BOUNDS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class ShadowCounts:
    """What one proxy (or all of them, combined) saw of a challenger compared with one live version."""

    against: str  # the live version whose answers the challenger's were compared with
    rows: int = 0  # rows sent to the challenger
    agreed: int = 0  # rows where it answered the live version's class
    errors: int = 0  # rows of calls that failed or timed out
    calls: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))  # calls per bucket
    pairs: dict[str, int] = field(default_factory=dict)  # "<live class>><challenger class>" -> rows
    latency_sum_ms: float = 0.0

    def observe_call(self, latency_ms: float, pairs: list[tuple[str, str]] | None, rows: int) -> None:
        """One call to the challenger: its class per row beside the live one's, or None when it failed."""
        self.calls += 1
        self.rows += rows
        self.latency[bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1
        self.latency_sum_ms += latency_ms
        if pairs is None:
            self.errors += rows
            return
        for live, challenger in pairs:
            key = f"{live}>{challenger}"
            self.pairs[key] = self.pairs.get(key, 0) + 1
            self.agreed += live == challenger

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.rows if self.rows else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.rows if self.rows else None

    @property
    def p99_ms(self) -> float | None:
        """The upper bound of the bucket holding the 99th percentile call (inf beyond the last bound)."""
        return quantile_ms(self.latency, 0.99)

    def as_json(self) -> str:
        return json.dumps(
            {
                "against": self.against,
                "rows": self.rows,
                "agreed": self.agreed,
                "errors": self.errors,
                "calls": self.calls,
                "latency": self.latency,
                "pairs": self.pairs,
                "latency_sum_ms": round(self.latency_sum_ms, 3),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> "ShadowCounts | None":
        """None for anything that is not a well-formed record (a tag edited by hand, another format)."""
        try:
            record = json.loads(text)
            counts = cls(
                against=str(record["against"]),
                rows=int(record["rows"]),
                agreed=int(record["agreed"]),
                errors=int(record["errors"]),
                calls=int(record.get("calls", 0)),
                latency=[int(n) for n in record["latency"]],
                pairs={str(k): int(v) for k, v in record["pairs"].items()},
                latency_sum_ms=float(record.get("latency_sum_ms", 0.0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if len(counts.latency) != len(LATENCY_BOUNDS_MS) + 1 or not 0 <= counts.agreed <= counts.rows:
            return None
        return counts


def quantile_ms(buckets: list[int], q: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    rank, seen = q * total, 0
    for bound, count in zip((*LATENCY_BOUNDS_MS, float("inf")), buckets):
        seen += count
        if seen >= rank:
            return float(bound)
    return float("inf")


def combine(entries: list[ShadowCounts], against: str) -> ShadowCounts:
    """The sum of the entries that compared against ``against``; the others are left out."""
    total = ShadowCounts(against)
    for entry in entries:
        if entry.against != against:
            continue
        total.rows += entry.rows
        total.agreed += entry.agreed
        total.errors += entry.errors
        total.calls += entry.calls
        total.latency_sum_ms += entry.latency_sum_ms
        total.latency = [a + b for a, b in zip(total.latency, entry.latency)]
        for key, rows in entry.pairs.items():
            total.pairs[key] = total.pairs.get(key, 0) + rows
    return total


def source_key(proxy_id: str, against: str) -> str:
    """The tag one proxy keeps its counts under; the id is reduced to the characters a tag key allows."""
    return f"{Tag.SHADOW_SOURCE_PREFIX}{_UNSAFE.sub('-', proxy_id)[:160]}.v{against}"


def entries(tags: dict[str, str]) -> list[ShadowCounts]:
    """Every proxy's counts among a version's tags; unreadable ones are skipped."""
    found = (ShadowCounts.from_json(value) for key, value in tags.items() if key.startswith(Tag.SHADOW_SOURCE_PREFIX))
    return [entry for entry in found if entry is not None]


def evidence(tags: dict[str, str], against: str) -> ShadowCounts:
    """All the shadow evidence a version's tags hold against one live version."""
    return combine(entries(tags), against)


def summary_tags(counts: ShadowCounts) -> dict[str, str]:
    """The combined figures as the summary tags people and ``registry_tools show`` read."""
    p99 = counts.p99_ms

    def share(value):
        return "" if value is None else f"{value:.4f}"

    return {
        Tag.SHADOW_ROWS: str(counts.rows),
        Tag.SHADOW_AGREEMENT: share(counts.agreement),
        Tag.SHADOW_ERROR_RATE: share(counts.error_rate),
        Tag.SHADOW_P99_MS: "" if p99 is None else f"{p99:g}",
        Tag.SHADOW_AGAINST: counts.against,
    }
