"""The proxy's MLflow-free registry client against a real ``mlflow server`` (against servers that misbehave:
``tests/unit/serving/registry/test_registry_rest.py``).

The server holds a copy of the session registry (iris v1, v2 champion, v3 challenger). Tests
that write work on their own copy of ``iris`` made through MLflow's own API, and what they
wrote is read back with MLflow's own client: the REST lookup must be indistinguishable from
the helper process that runs MLflow's client.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest
import requests

from iris_core.alias_history import alias_history, move_alias_if
from iris_core.contract import MoveKind
from iris_core.errors import RegistryUnavailable
from iris_core.refs import ModelRef, parse_model_uri
from iris_core.resolver import Resolved
from serving.config import parse_model_uri as parse_any_uri
from serving.registry.base import document_with_mlflow
from serving.registry.lookup import HelperRegistryLookup, open_lookup
from serving.registry.rest import RestRegistryLookup
from tests.helpers.proxies import ROW, START_TIMEOUT
from tests.helpers.registry_checks import fresh_copy
from tests.helpers.support import free_port, http_ok, mlflow_server, start_logged, stop_process, wait_until
from tests.helpers.tracking import BIN, LEAKY_ENV, REPO, clean_env


@pytest.fixture(scope="module")
def server(trained_registry, tmp_path_factory):
    """An ``mlflow server`` over a copy of the session registry's database; its model files stay where they are."""
    directory = tmp_path_factory.mktemp("rest-server")
    shutil.copyfile(trained_registry / "mlflow.db", directory / "server.db")
    with mlflow_server(f"sqlite:///{directory / 'server.db'}", directory / "artifacts") as uri:
        yield uri


@pytest.fixture
def mlflow_client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server, registry_uri=server)


@pytest.fixture
def model(mlflow_client) -> str:
    """A fresh copy of the server's iris: same versions, aliases and alias history."""
    return fresh_copy(mlflow_client)


def rest(server: str, uri: str = "models:/iris@champion", **env) -> RestRegistryLookup:
    return RestRegistryLookup(parse_model_uri(uri), server, {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", **env})


def test_an_http_store_is_asked_over_rest_and_any_other_store_through_the_helper_process(tmp_path):
    model = ModelRef("iris", "champion")
    assert isinstance(open_lookup(model, {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}), RestRegistryLookup)
    assert isinstance(open_lookup(model, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}), HelperRegistryLookup)
    assert isinstance(open_lookup(model, {}), HelperRegistryLookup)  # MLflow's default, ./mlflow.db
    registry_elsewhere = {"MLFLOW_TRACKING_URI": "http://tracking:5000", "MLFLOW_REGISTRY_URI": "sqlite:///r.db"}
    assert isinstance(open_lookup(model, registry_elsewhere), HelperRegistryLookup)
    plugin = {"MLFLOW_TRACKING_URI": "https://mlflow.example.com", "MLFLOW_TRACKING_AWS_SIGV4": "true"}
    assert isinstance(open_lookup(model, plugin), HelperRegistryLookup)  # only MLflow's client signs requests


# -- against a real mlflow server -------------------------------------------------------------------


def test_resolve_names_the_version_and_run_mlflows_client_names(server, mlflow_client):
    champion = mlflow_client.get_model_version_by_alias("iris", "champion")
    assert rest(server).resolve() == Resolved(str(champion.version), champion.run_id)
    fixed = rest(server, "models:/iris/1")
    assert asyncio.run(fixed.resolve_async()) == Resolved("1", mlflow_client.get_model_version("iris", "1").run_id)


def signature_of(document: dict) -> dict:
    return {k: json.loads(v) for k, v in document["signature"].items() if v}


def test_what_a_version_is_reads_over_rest_as_mlflow_reads_it_from_its_model_file(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    over_mlflow = document_with_mlflow(None, ModelRef("iris"), "2")
    over_rest = rest(server).document("2")
    assert signature_of(over_rest) == signature_of(over_mlflow)
    assert over_rest["metadata"] == over_mlflow["metadata"]
    assert over_rest["example"] == over_mlflow["example"] and over_rest["example"]["data"]


def test_a_runs_uri_resolves_to_its_run_and_signature_over_rest_as_over_mlflow(server, mlflow_client, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    run_id = mlflow_client.get_model_version("iris", "2").run_id
    model = parse_any_uri(f"runs:/{run_id}/model")
    lookup = RestRegistryLookup(model, server, {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    assert lookup.resolve() == Resolved(f"run-{run_id}", run_id)
    over_mlflow = document_with_mlflow(None, model, "ignored")
    assert signature_of(lookup.document("ignored")) == signature_of(over_mlflow)
    with pytest.raises(RegistryUnavailable, match="no run with ID 0123456789abcdef"):
        RestRegistryLookup(parse_any_uri("runs:/0123456789abcdef/model"), server).resolve()
    with pytest.raises(RegistryUnavailable, match="logged no model at 'elsewhere'"):
        RestRegistryLookup(parse_any_uri(f"runs:/{run_id}/elsewhere"), server).resolve()


def test_an_unset_alias_is_none_and_a_missing_model_or_version_is_unavailable_with_the_resolvers_message(server):
    assert rest(server, "models:/iris@nobody").resolve() is None
    with pytest.raises(RegistryUnavailable, match="no registered model named 'nothing'"):
        rest(server, "models:/nothing@champion").resolve()
    with pytest.raises(RegistryUnavailable, match="iris has no version 99"):
        rest(server, "models:/iris/99").resolve()


def test_version_tags_are_read_and_written_as_mlflows_client_sees_them(server, mlflow_client, model):
    lookup = rest(server, f"models:/{model}@champion")
    asyncio.run(lookup.set_version_tags("2", {"shadow.rows": "120", "note": "é ✓"}))
    assert {
        k: v for k, v in mlflow_client.get_model_version(model, "2").tags.items() if k in ("shadow.rows", "note")
    } == {
        "shadow.rows": "120",
        "note": "é ✓",
    }
    assert asyncio.run(lookup.version_tags("2")) == mlflow_client.get_model_version(model, "2").tags


def test_the_compare_and_set_move_over_rest_writes_the_record_the_core_writes_over_mlflow(server, mlflow_client, model):
    lookup = rest(server, f"models:/{model}@champion")
    moved = asyncio.run(lookup.move_alias_if("champion", "2", "1", how=MoveKind.AUTO_ROLLBACK, reason="errors", by="a"))
    assert moved is True and str(mlflow_client.get_registered_model(model).aliases["champion"]) == "1"
    over_rest = alias_history(mlflow_client, model, "champion")[0]
    move_alias_if(mlflow_client, model, "champion", "1", "2", how=MoveKind.AUTO_ROLLBACK, reason="back", by="b")
    over_mlflow = alias_history(mlflow_client, model, "champion")[0]
    assert (over_rest.from_version, over_rest.to_version, over_rest.how, over_rest.by, over_rest.reason) == (
        "2",
        "1",
        "auto-rollback",
        "a",
        "errors",
    )
    assert over_rest.as_dict().keys() == over_mlflow.as_dict().keys()
    assert (over_mlflow.from_version, over_mlflow.to_version) == ("1", "2")
    tags = mlflow_client.get_registered_model(model).tags
    assert not [key for key in tags if key.startswith("alias_claim.")]  # the claims were removed

    stale = asyncio.run(lookup.move_alias_if("champion", "3", "1", how=MoveKind.AUTO_ROLLBACK, reason="late", by="c"))
    assert stale is False and mlflow_client.get_registered_model(model).tags == tags


def test_two_replicas_racing_over_rest_move_the_alias_once(server, mlflow_client, model):
    before = len(alias_history(mlflow_client, model, "champion"))

    async def race():
        replicas = [rest(server, f"models:/{model}@champion") for _ in range(2)]
        moves = [
            r.move_alias_if("champion", "2", "1", how=MoveKind.AUTO_ROLLBACK, reason="x", by="r") for r in replicas
        ]
        return await asyncio.gather(*moves)

    assert sorted(asyncio.run(race())) == [False, True]
    assert len(alias_history(mlflow_client, model, "champion")) == before + 1


def test_every_operation_runs_without_importing_mlflow(server, model, tmp_path):
    script = f"""
import asyncio, multiprocessing, sys
from iris_core.refs import parse_model_uri
from serving.registry.lookup import open_lookup

lookup = open_lookup(parse_model_uri("models:/{model}@champion"))
assert lookup.resolve().version == "2"
async def main():
    await lookup.set_version_tags("2", {{"k": "v"}})
    assert (await lookup.version_tags("2"))["k"] == "v"
    assert await lookup.move_alias_if("champion", "2", "1", how="auto-rollback", reason="r", by="b")
    assert (await lookup.resolve_async()).version == "1"
asyncio.run(main())
print(sorted(name for name in sys.modules if name.split(".")[0] == "mlflow"), multiprocessing.active_children())
"""
    env = {k: v for k, v in clean_env({"MLFLOW_TRACKING_URI": server}).items() if k not in LEAKY_ENV}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] []"  # no MLflow here, and no helper process elsewhere


@pytest.mark.slow
def test_a_proxy_over_an_http_store_has_no_process_importing_mlflow_but_its_model_servers(
    server, mlflow_client, model, tmp_path
):
    port = free_port()
    log = tmp_path / "proxy.log"
    env = {k: v for k, v in clean_env({"MLFLOW_TRACKING_URI": server}).items() if k not in LEAKY_ENV}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-X", "importtime", "-m", "serving", "--port", str(port), "--poll-interval", "0.5"]
    proc = start_logged(
        [*command, "--model-uri", f"models:/{model}@champion", "--log-dir", str(tmp_path / "logs")],
        log,
        cwd=REPO,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_ok(f"{url}/ready"), START_TIMEOUT, what=f"proxy (log: {log})")
        mlflow_client.delete_registered_model_alias(model, "champion")  # the polls go over REST too
        wait_until(lambda: registry_state(url) == "alias_missing", 30, what="the proxy to see the alias gone")
        answered = requests.post(f"{url}/predict", json=ROW, timeout=30)
        started = children(proc.pid)
    finally:
        stop_process(proc, timeout=60)
    assert answered.status_code == 200 and answered.headers["X-Model-Version"] == "2"
    assert len(started) == 1 and " models serve " in started[0], started
    imported = [line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines() if "import time:" in line]
    assert "aiohttp" in imported and not [name for name in imported if name.split(".")[0] == "mlflow"]


def registry_state(url: str) -> str:
    return requests.get(f"{url}/health", timeout=30).json()["registry"]["state"]


def children(pid: int) -> list[str]:
    """The command lines of the processes whose parent is ``pid``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) != pid:
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                found.append(cmdline.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue
    return found
