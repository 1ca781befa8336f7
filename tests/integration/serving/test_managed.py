"""`python -m serving` running its own model servers: live rollout, crash and recovery, stop.

One stack for the module, serving ``models:/iris@champion`` from its own copy of the
session registry, as a user starts it. The tests run in order: each rollout test starts
and ends with the alias on version 1; the metrics test reads what they did to the stack;
the last one stops the stack with SIGTERM.
"""

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from iris_core.processes import is_running
from tests.helpers.error_bodies import assert_error
from tests.helpers.iris import FEATURES
from tests.helpers.metrics_scrape import sample, scrape
from tests.helpers.proxies import START_TIMEOUT, running_proxy, serving_env
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.support import wait_until
from tests.helpers.tracking import Registry, sqlite_uri

pytestmark = pytest.mark.slow

KEEP_LOGS = 2  # fewer than the model servers the module starts (3), so that pruning shows


def registry_tools(registry_dir, *args: str) -> str:
    """The real ``python -m registry_tools`` command line against this registry."""
    result = subprocess.run(
        [sys.executable, "-m", "registry_tools", *args],
        env=serving_env(registry_dir),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rollout_registry(trained_registry, tmp_path_factory):
    """A copy of the session registry whose champion has been rolled back to version 1."""
    directory = tmp_path_factory.mktemp("rollout-registry")
    shutil.copyfile(trained_registry / "mlflow.db", directory / "mlflow.db")
    registry_tools(directory, "rollback", "--yes", "--reason", "start the rollout tests on version 1")
    return directory


@pytest.fixture(scope="module")
def stack(rollout_registry, tmp_path_factory):
    with running_proxy(
        rollout_registry,
        tmp_path_factory.mktemp("rollout"),
        *("--poll-interval", "0.5", "--keep-warm", "1", "--keep-logs", str(KEEP_LOGS)),
    ) as proxy:
        yield proxy


@pytest.fixture
def client(rollout_registry):
    return Registry(uri=sqlite_uri(rollout_registry)).client()


def live_version(stack) -> str:
    return stack.health()["model"]["version"]


def test_the_proxy_starts_its_own_model_server_for_the_version_the_alias_names(stack):
    health = stack.health()
    assert health["status"] == "healthy" and health["following"] is True
    assert health["model"] == {
        "name": "iris",
        "alias": "champion",
        "version": "1",
        "run_id": health["model"]["run_id"],
        "contract": {"name": "iris", "origin": "curated", "features": 4},
    }
    assert health["upstream"]["kind"] == "managed" and health["upstream"]["version"] == "1"
    assert is_running(health["upstream"]["pid"])
    response = stack.predict()
    assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"
    assert stack.get("/version").text == importlib.metadata.version("mlflow"), "the model version is in /health"


def test_promote_and_rollback_under_load_fail_no_request_and_the_rollback_starts_nothing(stack, rollout_registry):
    assert live_version(stack) == "1"
    v1_pid = stack.health()["upstream"]["pid"]
    with SteadyLoad(stack) as load:
        wait_until(lambda: len(load.versions()) >= 20, 60, what="the load to start")
        registry_tools(rollout_registry, "promote", "2", "--reason", "live rollout test")
        wait_until(lambda: load.latest() == "2", START_TIMEOUT, what="responses from version 2")
        warm = stack.health()["warm"]
        assert [(u["version"], u["state"], u["pid"]) for u in warm] == [("1", "ready", v1_pid)]
        registry_tools(rollout_registry, "rollback", "--yes", "--reason", "live rollout test")
        wait_until(lambda: load.latest() == "1", 60, what="responses from version 1 again")
        time.sleep(1)
    versions = load.versions()
    assert load.failures == []
    assert versions[0] == "1" and "2" in versions and versions[-1] == "1"
    health = stack.health()
    assert health["upstream"]["pid"] == v1_pid  # the warm version 1 took over: nothing was started
    assert health["rollout"]["state"] == "switched" and health["rollout"]["cold"] is False
    assert [u["version"] for u in health["warm"]] == ["2"]


def test_a_versioned_v2_infer_is_answered_by_the_warm_version_and_its_metadata_read_from_the_registry(stack):
    assert live_version(stack) == "1" and [u["version"] for u in stack.health()["warm"]] == ["2"]
    row = [5.1, 3.5, 1.4, 0.2]
    body = {
        "inputs": [
            {"name": name, "shape": [1], "datatype": "FP64", "data": [row[i]]} for i, name in enumerate(FEATURES)
        ]
    }
    for version in ("1", "2"):
        answer = stack.post(f"/v2/models/iris/versions/{version}/infer", json=body)
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == version
        assert answer.json()["model_version"] == version
    assert stack.post("/v2/models/iris/infer", json=body).headers["X-Model-Version"] == "1"
    metadata = stack.get("/v2/models/iris/versions/2")  # version 2 was not the start-up version: asked now
    assert metadata.status_code == 200 and metadata.json()["versions"] == ["1", "2"]
    assert metadata.json()["outputs"][3]["parameters"]["classes"] == ["setosa", "versicolor", "virginica"]
    missing = stack.post("/v2/models/iris/versions/3/infer", json=body)
    assert missing.status_code == 404 and missing.json() == {
        "error": "version '3' is not loaded; loaded versions: 1, 2"
    }


def test_a_version_whose_model_cannot_load_is_not_switched_to(stack, rollout_registry, client, tmp_path):
    import mlflow

    from iris_core.alias_history import move_alias

    mlflow.set_tracking_uri(sqlite_uri(rollout_registry))
    try:
        source = mlflow.artifacts.download_artifacts("models:/iris/1", dst_path=str(tmp_path / "gone"))
    finally:
        mlflow.set_tracking_uri(None)
    broken = client.create_model_version(
        "iris", source=source, run_id=client.get_model_version("iris", "1").run_id
    ).version
    shutil.rmtree(source)  # the registry still lists it; its artifacts are gone
    move_alias(client, "iris", "champion", broken, how="promote", reason="a version that cannot load")
    try:
        wait_until(
            lambda: (stack.health()["rollout"] or {}).get("state") == "failed", START_TIMEOUT, what="the failed rollout"
        )
        health = stack.health()
        assert health["status"] == "healthy" and health["model"]["version"] == "1"
        assert health["rollout"]["version"] == str(broken) and health["rollout"]["error"]
        answer = stack.predict()
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
    finally:
        move_alias(client, "iris", "champion", "1", how="rollback", reason="end of test")
    wait_until(lambda: stack.health()["rollout"]["state"] == "abandoned", 60, what="the rollout to be abandoned")


def test_deleting_the_alias_keeps_the_service_answering(stack, client):
    from iris_core.alias_history import move_alias

    assert live_version(stack) == "1"
    client.delete_registered_model_alias("iris", "champion")
    try:
        wait_until(
            lambda: stack.health()["registry"]["state"] == "alias_missing", 60, what="the missing alias to be seen"
        )
        answer = stack.predict()
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1"
        assert stack.get("/health").status_code == 200
    finally:
        move_alias(client, "iris", "champion", "1", how="promote", reason="end of test")
    wait_until(lambda: stack.health()["registry"]["state"] == "ok", 60, what="the alias to be seen again")


def test_killing_the_model_server_degrades_health_at_once_then_it_recovers_by_itself(stack):
    before = stack.health()["upstream"]
    os.killpg(before["pid"], signal.SIGKILL)
    wait_until(lambda: stack.get("/health").status_code == 503, 15, interval=0.05, what="degraded health")
    assert stack.health()["status"] == "degraded"
    refused = stack.predict()  # restarting takes seconds: the client hears 503, not a reset
    assert_error(refused, 503, "UPSTREAM_UNAVAILABLE")
    assert "Retry-After" in refused.headers
    wait_until(lambda: stack.get("/health").status_code == 200, START_TIMEOUT, what="recovery")
    after = stack.health()["upstream"]
    assert after["pid"] != before["pid"] and after["starts"] == before["starts"] + 1
    assert stack.predict().status_code == 200


def test_metrics_count_the_rollouts_and_the_restart_and_model_info_follows_the_alias(stack):
    samples = scrape(stack.url + "/metrics")
    assert sample(samples, "proxy_rollouts_total", outcome="done") == 2  # cold to version 2, warm back to 1
    assert sample(samples, "proxy_rollouts_total", outcome="failed") >= 1  # the version that cannot load
    assert sample(samples, "proxy_upstream_restarts_total") == 1  # after the kill
    assert sample(samples, "proxy_model_info", name="iris", alias="champion", version="1") == 1
    assert sample(samples, "proxy_model_info", name="iris", alias="champion", version="2") == 0


def test_only_the_newest_keep_logs_model_server_logs_stay_and_the_live_ones_is_among_them(stack):
    started = stack.output().count("starting the model server for")
    logs = list((stack.log.parent / "logs" / "serving").glob("upstream-v*.log"))
    assert started > KEEP_LOGS and len(logs) == KEEP_LOGS, (started, logs)
    assert os.path.exists(stack.health()["upstream"]["log"])


def test_sigterm_stops_every_process_it_started_even_a_model_server_still_starting_and_exits_0(stack, client):
    from iris_core.alias_history import move_alias

    move_alias(client, "iris", "champion", "3", how="promote", reason="a rollout still starting at SIGTERM")
    wait_until(
        lambda: any("models:/iris/3" in args for args in children(stack.proc.pid).values()),
        60,
        interval=0.05,
        what="the model server for version 3 to be starting",
    )
    started = children(stack.proc.pid)
    serving = [args for args in started.values() if "models serve" in args]
    assert len(serving) == 3, serving  # live version 1, warm version 2, version 3 starting
    os.kill(stack.proc.pid, signal.SIGTERM)  # the proxy alone, as `docker stop` does
    assert stack.proc.wait(timeout=60) == 0
    wait_until(lambda: not any(is_running(pid) for pid in started), 30, what="every process it started to stop")


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    found[int(entry)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found
