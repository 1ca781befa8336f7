"""The reading of metric names and label matchers out of PromQL (``tests.helpers.deploy.promql``) that the scrape test relies on."""

import pytest

from tests.helpers.deploy.promql import Selector, grafana_instant, selectors


def names_and_labels(expr: str) -> list[tuple[str, set[str]]]:
    return [(s.name, s.labels) for s in selectors(expr)]


def test_functions_aggregations_and_label_lists_are_not_read_as_metrics():
    expr = "histogram_quantile(0.99, sum by (model, le) (rate(proxy_request_duration_seconds_bucket[5m])))"
    assert names_and_labels(expr) == [("proxy_request_duration_seconds_bucket", set())]
    expr = "sum(rate(proxy_requests_total[1m])) without (code) > bool 0 unless on (job) group_left up offset 5m"
    assert names_and_labels(expr) == [("proxy_requests_total", set()), ("up", set())]


def test_matchers_are_read_with_their_operator_and_value():
    expr = 'rate(proxy_requests_total{code=~"5..", endpoint!="/ping", job=~"$job"}[$__rate_interval])'
    (selector,) = selectors(expr)
    assert selector == Selector(
        "proxy_requests_total", (("code", "=~", "5.."), ("endpoint", "!=", "/ping"), ("job", "=~", "$job"))
    )


def test_a_join_reads_both_sides_and_skips_the_labels_it_copies():
    expr = (
        "sum by (model, version) (rate(proxy_requests_total[5m])"
        " * on (job, instance, model) group_left (version) proxy_model_info)"
    )
    assert [s.name for s in selectors(expr)] == ["proxy_requests_total", "proxy_model_info"]


def test_an_absent_label_matcher_asks_for_no_label_and_name_matchers_name_the_metric():
    (selector,) = selectors('{__name__="proxy_model_info", alias=""}')
    assert selector.name == "proxy_model_info" and selector.labels == set()


def test_strings_and_numbers_are_never_metrics():
    expr = 'label_replace(proxy_model_info, "v", "$1", "version", "(.*)") > 1e3 or vector(0.5)'
    assert [s.name for s in selectors(expr)] == ["proxy_model_info"]


def test_a_query_it_cannot_read_is_an_error_not_a_silent_pass():
    with pytest.raises(ValueError):
        selectors("proxy_requests_total{code 5}")


def test_grafana_variables_become_values_prometheus_takes():
    assert grafana_instant('rate(x{job=~"$job"}[$__rate_interval])') == 'rate(x{job=~".*"}[1m])'
