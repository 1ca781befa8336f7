"""Shadow evidence as tags: one record per proxy, combined into one figure whoever reads it."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iris_core.contract import Tag
from iris_core.shadow_evidence import (
    LATENCY_BOUNDS_MS,
    ShadowCounts,
    combine,
    entries,
    evidence,
    source_key,
    summary_tags,
)


def observed(against: str, calls: list[tuple[float, list[tuple[str, str]] | None, int]]) -> ShadowCounts:
    counts = ShadowCounts(against)
    for latency_ms, pairs, rows in calls:
        counts.observe_call(latency_ms, pairs, rows)
    return counts


def test_a_call_counts_its_rows_agreement_class_pairs_and_latency_and_a_failed_call_its_errors():
    counts = observed("2", [(4.0, [("setosa", "setosa"), ("virginica", "versicolor")], 2), (30.0, None, 3)])
    assert (counts.rows, counts.agreed, counts.errors, counts.calls) == (5, 1, 3, 2)
    assert counts.pairs == {"setosa>setosa": 1, "virginica>versicolor": 1}
    assert counts.agreement == 0.2 and counts.error_rate == 0.6
    assert counts.p99_ms == 50.0  # the bucket holding the slowest call


def test_each_proxy_keeps_its_own_tag_and_the_combination_sums_them_exactly():
    a = observed("2", [(4.0, [("setosa", "setosa")] * 10, 10)] * 3)
    b = observed("2", [(200.0, [("setosa", "virginica")] * 10, 10), (3.0, None, 5)])
    stale = observed("1", [(4.0, [("setosa", "setosa")] * 100, 100)])  # compared with another live version
    tags = {
        source_key("pod-a", "2"): a.as_json(),
        source_key("pod-b", "2"): b.as_json(),
        source_key("pod-a", "1"): stale.as_json(),
        "shadow.pod-c.v2": "{not json",
        "owner": "team",
    }
    assert len(entries(tags)) == 3
    total = evidence(tags, "2")
    assert (total.rows, total.agreed, total.errors, total.calls) == (45, 30, 5, 5)
    assert total.pairs == {"setosa>setosa": 30, "setosa>virginica": 10}
    assert total.p99_ms == 250.0, "the p99 of all calls, not an average of each proxy's"
    assert summary_tags(total) == {
        Tag.SHADOW_ROWS: "45",
        Tag.SHADOW_AGREEMENT: "0.6667",
        Tag.SHADOW_ERROR_RATE: "0.1111",
        Tag.SHADOW_P99_MS: "250",
        Tag.SHADOW_AGAINST: "2",
    }


def test_a_proxy_writing_its_totals_again_counts_nothing_twice():
    a = observed("2", [(4.0, [("setosa", "setosa")] * 7, 7)])
    tags = {source_key("pod-a", "2"): a.as_json()}
    tags[source_key("pod-a", "2")] = a.as_json()
    assert evidence(tags, "2").rows == 7


def test_a_proxy_id_is_reduced_to_characters_a_tag_key_allows():
    key = source_key("pod a/b:c@d" * 40, "12")
    assert key.startswith("shadow.pod-a-b-c-d") and key.endswith(".v12") and len(key) < 250


@given(
    st.lists(
        st.tuples(st.floats(0, 60_000), st.integers(0, 50), st.integers(0, 50), st.booleans()), min_size=0, max_size=30
    ),
    st.integers(1, 5),
)
def test_combining_split_records_equals_counting_everything_in_one(calls, parts):
    whole, pieces = ShadowCounts("3"), [ShadowCounts("3") for _ in range(parts)]
    for i, (latency, agree, disagree, failed) in enumerate(calls):
        pairs = None if failed else [("setosa", "setosa")] * agree + [("setosa", "virginica")] * disagree
        whole.observe_call(latency, pairs, agree + disagree)
        pieces[i % parts].observe_call(latency, pairs, agree + disagree)
    read_back = [ShadowCounts.from_json(piece.as_json()) for piece in pieces]
    combined = combine(read_back, "3")
    assert combined.latency_sum_ms == pytest.approx(whole.latency_sum_ms, abs=0.001 * parts)
    assert replace(combined, latency_sum_ms=0) == replace(whole, latency_sum_ms=0)
    assert len(whole.latency) == len(LATENCY_BOUNDS_MS) + 1
