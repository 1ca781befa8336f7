"""A real ``python -m serving --capture-uri`` capturing to a real ``mlflow server --serve-artifacts``, through failures.

The tracking server is stopped and started again on the same port while traffic goes on,
and a proxy is killed with SIGKILL in the middle of a file. The capture is read where the
server keeps its artifacts (``--artifacts-destination``), as whole Parquet files only.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iris_core.capture import parse_partition
from tests.helpers.iris import FEATURES
from tests.helpers.metrics_scrape import sample, scrape
from tests.helpers.proxies import start_proxy
from tests.helpers.support import free_port, http_ok, start_mlflow_server, stop_process, wait_until
from tests.helpers.tracking import sqlite_uri

pytestmark = pytest.mark.slow

ROW = [5.1, 3.5, 1.4, 0.2]


class ArtifactServer:
    """An ``mlflow server --serve-artifacts`` on a fixed loopback port, which a test stops and starts again."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.artifacts = directory / "artifacts"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def capture_uri(self) -> str:
        return f"mlflow-artifacts://127.0.0.1:{self.port}/capture"

    def start(self) -> None:
        log = self.directory / f"server-{time.monotonic_ns()}.log"
        self.proc = start_mlflow_server(sqlite_uri(self.directory), self.artifacts, self.port, log)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.port}/health"), timeout=90, what="mlflow server")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def files(self, kind: str = "predictions") -> list[Path]:
        return sorted((self.artifacts / "capture" / kind).rglob("*.parquet"))

    def request_ids(self, prefix: str, kind: str = "predictions") -> list[str]:
        """The request ids of the rows of ``kind`` in the store, those starting with ``prefix``."""
        tables = [pq.read_table(path, columns=["request_id"]) for path in self.files(kind)]
        return [i for table in tables for i in table["request_id"].to_pylist() if i.startswith(prefix)]


@pytest.fixture(scope="module")
def artifact_server(tmp_path_factory):
    server = ArtifactServer(tmp_path_factory.mktemp("artifact-server"))
    server.start()
    yield server
    server.stop()


def capturing(upstream_url: str, artifact_server, replica: str, *more: str) -> tuple[str, ...]:
    """The arguments of a proxy for version 2 in front of the shared upstream, capturing to the artifact server."""
    return (
        *("--upstream", upstream_url, "--model-uri", "models:/iris/2"),
        *("--capture-uri", artifact_server.capture_uri, "--capture-replica", replica, *more),
    )


def score(proxy, request_id: str) -> float:
    """One row scored; the seconds the answer took."""
    started = time.perf_counter()
    response = proxy.post(
        "/invocations",
        json={"dataframe_split": {"columns": list(FEATURES), "data": [ROW]}},
        headers={"X-Request-Id": request_id},
    )
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def test_a_tracking_server_stopped_mid_traffic_delays_no_answer_and_loses_no_row_once_it_is_back(
    trained_registry, upstream_url, artifact_server, tmp_path
):
    proxy = start_proxy(
        trained_registry, tmp_path, *capturing(upstream_url, artifact_server, "outage", "--capture-file-seconds", "1")
    )
    try:
        baseline = max(score(proxy, f"outage-{i}") for i in range(30))
        wait_until(lambda: len(artifact_server.request_ids("outage-")) == 30, timeout=30, what="the first rows stored")
        artifact_server.stop()
        during = [score(proxy, f"outage-{30 + i}") for i in range(100)]
        assert max(during) < max(1.0, 5 * baseline), "an answer waited for the store"
        wait_until(
            lambda: proxy.health()["capture"]["state"] == "store_failing", timeout=30, what="the outage in /health"
        )
        health = proxy.health()["capture"]
        assert health["spool"]["files"] >= 1 and "unreachable" in health["store"]["last_error"]
        assert sample(scrape(proxy.url + "/metrics"), "proxy_capture_store_up") == 0
        assert proxy.health()["status"] == "healthy", "a store that is down does not make the proxy unhealthy"

        artifact_server.start()
        wait_until(lambda: proxy.health()["capture"]["spool"]["files"] == 0, timeout=90, what="the spool to empty")
        assert proxy.health()["capture"]["state"] == "ok"
        metrics = scrape(proxy.url + "/metrics")
        assert sample(metrics, "proxy_capture_store_up") == 1
        assert sum(v for (name, _), v in metrics.items() if name == "proxy_capture_dropped_rows_total") == 0
    finally:
        stop_process(proxy.proc, timeout=60)
    ids = artifact_server.request_ids("outage-")
    assert sorted(ids) == sorted(f"outage-{i}" for i in range(130)), "every row, once"


def test_a_proxy_killed_mid_file_loses_only_its_open_file_and_its_next_start_uploads_the_labels_it_had_taken(
    trained_registry, upstream_url, artifact_server, tmp_path
):
    args = capturing(
        upstream_url, artifact_server, "killed", *("--capture-file-rows", "50", "--capture-file-seconds", "3600")
    )
    proxy = start_proxy(trained_registry, tmp_path, *args)
    try:
        for i in range(120):
            score(proxy, f"killed-{i}")
        labels = [{"request_id": f"killed-{i}", "label": "setosa"} for i in range(110, 120)]
        assert proxy.post("/feedback", json=labels).status_code == 200
        wait_until(lambda: len(artifact_server.files()) >= 2, timeout=30, what="two closed files in the store")
        os.killpg(proxy.proc.pid, signal.SIGKILL)
        proxy.proc.wait(timeout=30)
    finally:
        stop_process(proxy.proc)
    written = [path for path in artifact_server.files() if path.name.startswith("killed-")]
    assert [pq.read_metadata(path).num_rows for path in written] == [50, 50], "whole files, none cut"
    killed = sorted(i for i in artifact_server.request_ids("killed-"))
    assert killed == sorted(f"killed-{i}" for i in range(100)), "the rows of the closed files"
    assert not [p for p in (artifact_server.artifacts / "capture").rglob("*") if p.name.startswith(".")]
    assert not [p for p in artifact_server.files("feedback") if p.name.startswith("killed-")]

    again = start_proxy(trained_registry, tmp_path, *args)
    stop_process(again.proc, timeout=60)  # SIGTERM: the labels' journal the kill left closes into the store
    ids = artifact_server.request_ids("killed-")
    assert sorted(ids) == sorted(f"killed-{i}" for i in range(100)), "the open file's 20 rows, and only they, lost"
    (label_file,) = [p for p in artifact_server.files("feedback") if p.name.startswith("killed-")]
    assert (
        parse_partition(label_file.parent.relative_to(artifact_server.artifacts / "capture").as_posix()).version == "2"
    )
    assert pq.read_table(label_file)["request_id"].to_pylist() == [f"killed-{i}" for i in range(110, 120)]
