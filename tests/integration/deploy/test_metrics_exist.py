"""Debian's Prometheus scrapes a real proxy under a short load: every metric and label the rules and the dashboard use exists.

The proxy serves ``iris@champion`` of a copy of the session registry with every feature a
signal comes from: its own model servers, ``--shadow challenger``, the prediction and
feedback logs, and the monitor's verdicts (the tags the monitor step writes) on the served
version. Prometheus runs on loopback with the example configuration of deploy/prometheus
(its targets and intervals changed, the rules loaded), a temporary TSDB, a 1 s scrape.

The metric names and label matchers are read out of the rule expressions and the
dashboard's queries (``tests.helpers.deploy.promql``), so a metric or label renamed in ``serving``
fails here, naming the query that uses it.
"""

import itertools
import shutil
import time

import pytest
import requests
import yaml

from bench.traffic import ROWS
from iris_core.contract import DriftStatus, PerformanceStatus, Tag
from tests.helpers.deploy.promql import RULES, dashboard_queries, grafana_instant, recorded_names, scraped_selectors
from tests.helpers.deploy.tools import require
from tests.helpers.proxies import running_proxy
from tests.helpers.support import free_port, http_ok, start_logged, stop_process, wait_until
from tests.helpers.tracking import sqlite_uri

pytestmark = pytest.mark.slow

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLE_CONFIG = RULES[0].parent / "prometheus.example.yaml"
MAX_REQUESTS = 600  # the load's bound in requests; it stops sooner once every signal is there
MAX_LOAD_S = 120
MIN_LOAD_S = 5  # several 1 s scrapes see the counters grow


@pytest.fixture(scope="module")
def registry_dir(trained_registry, tmp_path_factory):
    """A copy of the session registry: champion v2 tagged as the monitor tags a drifted version, challenger v1."""
    from mlflow import MlflowClient

    directory = tmp_path_factory.mktemp("metrics-registry")
    shutil.copyfile(trained_registry / "mlflow.db", directory / "mlflow.db")
    client = MlflowClient(tracking_uri=sqlite_uri(directory), registry_uri=sqlite_uri(directory))
    client.set_model_version_tag("iris", "2", Tag.DRIFT_STATUS, DriftStatus.DRIFT)
    client.set_model_version_tag("iris", "2", Tag.PERFORMANCE_STATUS, PerformanceStatus.PERFORMANCE_DROP)
    client.set_registered_model_alias("iris", "challenger", "1")
    return directory


@pytest.fixture(scope="module")
def proxy(registry_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("metrics-proxy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERVING_API_TOKEN", TOKEN)
        with running_proxy(
            registry_dir,
            workdir,
            "--model-uri",
            "models:/iris@champion",
            "--shadow",
            "challenger",
            "--poll-interval",
            "0.5",
            "--prediction-log",
            str(workdir / "predictions.jsonl"),
            "--feedback-log",
            str(workdir / "feedback.jsonl"),
        ) as running:
            yield running


def exposed(proxy) -> str:
    return requests.get(f"{proxy.url}/metrics", timeout=30).text


def drive(proxy) -> int:
    """Score rows of each class with the token (and some without), label every answer, until every signal is exposed.

    Runs MIN_LOAD_S at least, bounded by MAX_REQUESTS and MAX_LOAD_S; returns the requests sent.
    """
    started, sent = time.monotonic(), 0
    needed = ("proxy_shadow_rows_total{", "proxy_live_accuracy{", "proxy_model_monitor_status{")
    with requests.Session() as session:
        for kind in itertools.cycle(ROWS):
            response = session.post(f"{proxy.url}/predict", json=ROWS[kind], headers=AUTH, timeout=30)
            assert response.status_code == 200, response.text
            label = {"request_id": response.headers["X-Request-Id"], "label": kind}
            assert session.post(f"{proxy.url}/feedback", json=label, headers=AUTH, timeout=30).status_code == 200
            if sent % 10 == 0:
                assert session.post(f"{proxy.url}/predict", json=ROWS[kind], timeout=30).status_code == 401
            sent += 1
            elapsed = time.monotonic() - started
            if sent % 20 == 0 and elapsed > MIN_LOAD_S and all(name in exposed(proxy) for name in needed):
                return sent
            if sent >= MAX_REQUESTS or elapsed > MAX_LOAD_S:
                pytest.fail(f"after {sent} requests the proxy still lacks one of {needed}: {proxy.output()[-2000:]}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def prometheus(proxy, tmp_path_factory):
    """Debian's prometheus scraping the proxy every second, with the rules loaded; yields its API's URL."""
    binary = require("prometheus")["prometheus"]
    workdir = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(EXAMPLE_CONFIG.parent / name) for name in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [proxy.url.removeprefix("http://")]}]
    (workdir / "prometheus.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    proc = start_logged(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yaml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_ok(f"{url}/-/ready"), 60, what=f"prometheus (log: {log})")
        # The load starts after the first scrape, so the counters grow between samples and rate() is above 0.
        wait_until(lambda: query(url, "up == 1"), 60, what=f"prometheus's first scrape (log: {log})")
        drive(proxy)
        # A few scrapes and rule evaluations: rate() needs two samples, and the rules a run after them.
        wait_until(lambda: query(url, "model:proxy_requests:rate5m"), 60, what=f"the rules' first results (log: {log})")
        yield url
    finally:
        stop_process(proc)


def query(url: str, expr: str, where: str = "") -> list[dict]:
    response = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30).json()
    assert response["status"] == "success", f"{where or expr}: {response.get('error')}"
    return response["data"]["result"]


def series(url: str, name: str) -> list[dict]:
    params = {"match[]": name, "start": time.time() - 600}
    response = requests.get(f"{url}/api/v1/series", params=params, timeout=30).json()
    assert response["status"] == "success", response
    return response["data"]


def test_every_metric_and_label_the_rules_and_the_dashboard_use_is_scraped_from_a_real_proxy(prometheus):
    missing = []
    for selector, places in sorted(scraped_selectors().items(), key=lambda item: str(item[0])):
        found = series(prometheus, selector.name)
        wanted = {(label, value) for label, op, value in selector.matchers if op == "=" and value and "$" not in value}
        if not any(selector.labels <= set(s) and all(s.get(k) == v for k, v in wanted) for s in found):
            seen = sorted({label for s in found for label in s}) if found else "no series"
            missing.append(f"{selector} (used by {', '.join(places)}; scraped labels: {seen})")
    assert not missing, "missing from the proxy's metrics:\n" + "\n".join(missing)


def test_every_rule_evaluates_without_error_on_the_scraped_metrics(prometheus):
    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    evaluated = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(recorded_names()) <= set(evaluated)
    wait_until(
        lambda: all(
            r["health"] == "ok"
            for g in requests.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
            for r in g["rules"]
        ),
        30,
        what="every rule evaluated",
    )
    for name in ("model:proxy_requests:rate5m", "model_version:proxy_requests:rate5m"):
        assert query(prometheus, name), f"{name} has no result"
    (per_version,) = query(prometheus, "model_version:proxy_requests:rate5m")
    assert per_version["metric"]["version"] == "2" and float(per_version["value"][1]) > 0


def test_every_dashboard_query_runs_in_prometheus_and_the_per_version_throughput_has_a_result(prometheus):
    for where, expr in dashboard_queries().items():
        query(prometheus, grafana_instant(expr), where)
    (throughput,) = [e for w, e in dashboard_queries().items() if "Throughput per version" in w]
    assert {r["metric"].get("version") for r in query(prometheus, grafana_instant(throughput))} == {"2"}


def test_the_monitors_verdicts_on_the_served_version_fire_their_alerts(prometheus):
    def firing() -> set[tuple[str, str]]:
        alerts = requests.get(f"{prometheus}/api/v1/alerts", timeout=30).json()["data"]["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("version")) for a in alerts if a["state"] == "firing"}

    wait_until(
        lambda: {("IrisModelDriftDetected", "2"), ("IrisModelPerformanceDrop", "2")} <= firing(),
        30,
        what="the drift and performance alerts",
    )
    assert not {name for name, _ in firing()} & {"IrisTrackingServerUnreachable", "IrisServingHigh5xxRate"}
