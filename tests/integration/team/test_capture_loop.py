"""Two proxies capturing at once into the team server's artifact store, then one ``cycle`` over both.

The team server is the README's (PostgreSQL, basic-auth, ``--serve-artifacts``), started once
per session by ``tests/helpers/team.py``. The capture lives under an experiment's artifact
root (``mlflow-artifacts:/<experiment id>/capture``), which the trainer owns; the proxies
and the cycle reach it with the trainer's credentials only. The loop runs on a model of its
own (``iris-capture``, registered from the team's iris version 2) so that the team tests'
``iris`` keeps its two versions.
"""

import io
import subprocess
import sys

import pandas as pd
import pytest
import requests

from iris_core.contract import HOLDOUT_SPLIT_ARTIFACT, CycleDecision, Tag
from iris_core.table.iris import IRIS
from serving.upstreams.servers import serve_command, upstream_env
from tests.helpers.support import free_port, http_ok, stop_process, wait_until
from tests.helpers.team import env_without_store, project
from tests.helpers.tracking import REPO
from tests.helpers.traffic import new_cultivar

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:starlette.middleware.wsgi is deprecated")]

MODEL = "iris-capture"
FEATURES, LABEL = IRIS.feature_names, IRIS.label


@pytest.fixture(scope="module")
def trainer(team_server, team_users, team_registry):
    """The trainer's environment and client; the model ``iris-capture`` version 1 (iris version 2's model) champion."""
    from mlflow import MlflowClient

    env = team_server.env(team_users["trainer"])
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        client = MlflowClient(tracking_uri=team_server.uri, registry_uri=team_server.uri)
        source = client.get_model_version("iris", "2")
        if not client.search_registered_models(f"name = '{MODEL}'"):
            client.create_registered_model(MODEL)
            # The server takes the run and the logged model from the version the source names.
            client.create_model_version(MODEL, "models:/iris/2")
            client.set_registered_model_alias(MODEL, "champion", "1")
        experiment = client.get_experiment_by_name("iris-capture") or client.get_experiment(
            client.create_experiment("iris-capture")
        )
        holdout = pd.read_csv(io.StringIO(_text(client, source.run_id, HOLDOUT_SPLIT_ARTIFACT)))
        yield {"env": env, "client": client, "capture": f"{experiment.artifact_location}/capture", "holdout": holdout}


def _text(client, run_id: str, path: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        return open(client.download_artifacts(run_id, path, directory)).read()


def start(command: list[str], env: dict, log, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**env_without_store(), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_two_proxies_capture_into_the_tracking_servers_artifact_store_and_one_cycle_over_both_retrains(
    trainer, tmp_path, monkeypatch
):
    env, client, capture = trainer["env"], trainer["client"], trainer["capture"]
    for key, value in env.items():  # each test starts without credentials (tests/conftest.py)
        monkeypatch.setenv(key, value)
    assert capture.startswith("mlflow-artifacts:/")
    processes = []
    try:
        upstream_port = free_port()
        with open(tmp_path / "upstream.log", "wb") as log:
            upstream = start(serve_command("models:/iris/2", upstream_port), {**upstream_env(), **env}, log, tmp_path)
        processes.append(upstream)
        proxies = []
        for replica in ("web-1", "web-2"):
            port = free_port()
            command = [sys.executable, "-m", "serving", "--port", str(port), "--upstream"]
            command += [f"http://127.0.0.1:{upstream_port}", "--model-uri", f"models:/{MODEL}/1"]
            command += ["--capture-uri", capture, "--capture-replica", replica, "--capture-file-seconds", "2"]
            with open(tmp_path / f"{replica}.log", "wb") as log:
                processes.append(start(command, env, log, tmp_path))
            proxies.append(f"http://127.0.0.1:{port}")
        for url in [f"http://127.0.0.1:{upstream_port}/ping", *(f"{p}/health" for p in proxies)]:
            wait_until(lambda url=url: http_ok(url), timeout=240, what=f"{url} (logs in {tmp_path})")

        # The champion's own held-out rows, then a cultivar it gets wrong; each request to one replica,
        # each label to the other, which never saw the answer: only the capture can join them.
        rows = pd.concat([trainer["holdout"].head(20), new_cultivar(60, seed=1)], ignore_index=True)
        for i, row in rows.iterrows():
            body = {"dataframe_split": {"columns": list(FEATURES), "data": [row[list(FEATURES)].tolist()]}}
            answered = requests.post(
                f"{proxies[i % 2]}/invocations", json=body, headers={"X-Request-Id": f"shop-{i}"}, timeout=30
            )
            assert answered.status_code == 200 and answered.headers["X-Model-Version"] == "1"
            label = {"request_id": f"shop-{i}", "label": row[LABEL]}
            kept = requests.post(f"{proxies[(i + 1) % 2]}/feedback", json=label, timeout=30)
            assert kept.status_code == 200 and kept.json()["not_remembered"] == 1
        health = requests.get(f"{proxies[0]}/health", timeout=30).json()["capture"]
        assert (health["location"], health["replica"], health["state"]) == (capture, "web-1", "ok")
    finally:
        for process in reversed(processes):
            stop_process(process, timeout=60)  # SIGTERM: each proxy closes its files into the store

    cycle = project(
        "steps.cycle",
        *("--predictions", capture, "--feedback", capture, "--hours", "1", "--model-name", MODEL),
        *("--data-path", str(REPO / "data" / "iris.csv")),
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert cycle.returncode == 0, cycle.stderr[-3000:]
    out = cycle.stdout
    assert f"{MODEL} version 1: performance_drop (live accuracy 0.2500, 80 labeled rows)" in out
    assert f"trained models:/{MODEL}/2 on the base data and 80 labeled production rows (0 labels matched" in out
    [decision] = [line for line in out.splitlines() if line.startswith("cycle: ")]
    assert decision.startswith(f"cycle: {CycleDecision.RETRAINED}: version 1: performance_drop")
    assert client.get_registered_model(MODEL).aliases["champion"] == "2"
    version = client.get_model_version(MODEL, "2")
    assert version.tags[Tag.PRODUCTION_ROWS] == "80"
    files = [f.path for f in client.list_artifacts(version.run_id)]
    assert files, "the retrained version's run logged its splits"
