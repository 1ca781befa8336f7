"""The project against a team server (PostgreSQL + basic-auth), changed only by environment variables.

One server and one pipeline history are shared by the module: the trainer's ``mlflow run``
pipeline made iris v1, the same pipeline code run as the trainer made v2 (champion). Tests that move the champion
put it back on v2 before they end.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from tests.helpers.support import free_port, http_ok, start_logged, stop_process, wait_until
from tests.helpers.team import EXPERIMENT, MODEL_NAME, START_SCRIPT, User, env_without_store, project, require_postgres
from tests.helpers.tracking import REPO, mlflow_cli

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:starlette.middleware.wsgi is deprecated")]

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
# What the README tells team clients to set, so that MLflow's own `mlflow run` gives up
# within seconds too (the project's tools set these themselves when unset).
BOUNDED_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


@pytest.fixture
def client_as(team_server, monkeypatch):
    """An MlflowClient of the team server, signed in as the given user."""
    from mlflow import MlflowClient

    def make(user: User):
        for key, value in team_server.env(user).items():
            monkeypatch.setenv(key, value)
        return MlflowClient(tracking_uri=team_server.uri, registry_uri=team_server.uri)

    return make


def champion(client) -> str:
    return str(client.get_registered_model(MODEL_NAME).aliases["champion"])


def assert_one_line_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1, a single ``error:`` line on stderr naming the problem, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_pipeline_runs_through_the_team_server_into_postgresql_and_its_artifact_store(
    team_server, team_users, team_registry, client_as
):
    client = client_as(team_users["trainer"])
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL_NAME}'"))
    assert versions == [1, 2]
    assert champion(client) == "2"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")  # the server's proxy, not a path
    assert team_server.sql("SELECT count(*) FROM model_versions WHERE name = 'iris'") == [(2,)]
    assert team_server.sql(f"SELECT count(*) FROM runs WHERE experiment_id = {experiment.experiment_id}")[0][0] >= 8
    assert any((team_server.data_dir / "artifacts").rglob("MLmodel"))


def test_rollback_then_promote_through_the_team_server_move_the_champion_and_record_the_user(
    team_server, team_users, team_registry, client_as, tmp_path
):
    trainer = team_users["trainer"]
    client = client_as(trainer)
    env = team_server.env(trainer)

    rolled_back = project("registry_tools", "rollback", "--yes", "--reason", "team check", env=env, cwd=tmp_path)
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert champion(client) == "1"
    promoted = project("registry_tools", "promote", "2", "--reason", "back to v2", env=env, cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr
    assert champion(client) == "2"

    history = project("registry_tools", "history", "--json", env=env, cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    moves = json.loads(history.stdout)
    assert [(m["how"], m["from_version"], m["to_version"], m["by"]) for m in moves[:2]] == [
        ("promote", "1", "2", "trainer"),
        ("rollback", "2", "1", "trainer"),
    ]


def test_served_prediction_comes_from_the_champion_fetched_through_the_artifact_proxy(
    team_server, team_users, team_registry, tmp_path
):
    log_before = team_server.log.read_text(errors="replace").count("/mlflow-artifacts/artifacts/")
    port = free_port()
    log = tmp_path / "serving.log"
    proc = start_logged(
        [sys.executable, "-m", "serving", "--port", str(port), "--log-dir", str(tmp_path / "logs")],
        log,
        cwd=tmp_path,
        env={**env_without_store(), **team_server.env(team_users["viewer"])},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_ok(f"{url}/health"), timeout=300, what=f"serving (log: {log})")
        response = requests.post(f"{url}/predict", json=ROW, timeout=60)
    finally:
        stop_process(proc, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == "setosa"
    assert response.headers["X-Model-Version"] == "2"
    # The model files came over HTTP from the server (a reader needs no access to its storage).
    assert team_server.log.read_text(errors="replace").count("/mlflow-artifacts/artifacts/") > log_before


def test_anonymous_requests_are_refused_and_create_nothing(team_server, team_users, client_as):
    created = requests.post(
        f"{team_server.uri}/api/2.0/mlflow/experiments/create", json={"name": "anonymous"}, timeout=60
    )
    moved = requests.post(
        f"{team_server.uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": MODEL_NAME, "alias": "champion", "version": "1"},
        timeout=60,
    )
    listed = requests.get(f"{team_server.uri}/api/2.0/mlflow/experiments/search", params={"max_results": 5}, timeout=60)
    assert (created.status_code, moved.status_code, listed.status_code) == (401, 401, 401)
    assert client_as(team_server.admin).get_experiment_by_name("anonymous") is None


def test_a_read_only_user_can_read_the_registry_but_cannot_promote_or_roll_back(
    team_server, team_users, team_registry, client_as, tmp_path
):
    from mlflow.server.auth.client import AuthServiceClient

    admin_client = client_as(team_server.admin)
    experiment_id = admin_client.get_experiment_by_name(EXPERIMENT).experiment_id
    auth = AuthServiceClient(team_server.uri)
    auth.grant_user_permission("viewer", "registered_model", MODEL_NAME, "READ")
    auth.grant_user_permission("viewer", "experiment", experiment_id, "READ")
    before = admin_client.get_registered_model(MODEL_NAME)
    env = team_server.env(team_users["viewer"])

    listed = project("registry_tools", "list", env=env, cwd=tmp_path)
    promoted = project("registry_tools", "promote", "1", env=env, cwd=tmp_path)
    rolled_back = project("registry_tools", "rollback", "--yes", env=env, cwd=tmp_path)

    assert listed.returncode == 0 and "champion" in listed.stdout, listed.stderr
    assert_one_line_failure(promoted, "permission denied")
    assert_one_line_failure(rolled_back, "permission denied")
    after = admin_client.get_registered_model(MODEL_NAME)
    assert (after.aliases, after.tags) == (before.aliases, before.tags)


def rest_lookup(team_server, user: User):
    """The serving proxy's MLflow-free registry client, signed in as ``user`` the way MLflow's client would be."""
    from iris_core.refs import ModelRef
    from serving.registry.rest import RestRegistryLookup

    env = {**team_server.env(user), "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    return RestRegistryLookup(ModelRef(MODEL_NAME, "champion"), team_server.uri, env)


def test_the_proxys_rest_client_signs_in_resolves_and_moves_the_champion_back_recording_the_move(
    team_server, team_users, team_registry, client_as
):
    import asyncio

    from mlflow.models import get_model_info

    from iris_core.alias_history import alias_history
    from serving.config import parse_model_uri
    from serving.registry.rest import RestRegistryLookup

    client = client_as(team_users["trainer"])
    lookup = rest_lookup(team_server, team_users["trainer"])
    assert lookup.resolve().version == "2"
    # The MLmodel file comes through the server's artifact proxy, as MLflow's client gets it.
    inputs = get_model_info(f"models:/{MODEL_NAME}/2").signature.to_dict()["inputs"]
    assert lookup.document("2")["signature"]["inputs"] == inputs
    run_id = client.get_model_version(MODEL_NAME, "2").run_id
    env = {**team_server.env(team_users["trainer"]), "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    run_model = RestRegistryLookup(parse_model_uri(f"runs:/{run_id}/model"), team_server.uri, env)
    assert run_model.resolve().run_id == run_id and run_model.document("ignored")["signature"]["inputs"] == inputs
    try:
        moved = asyncio.run(lookup.move_alias_if("champion", "2", "1", how="auto-rollback", reason="p99", by="pod-a"))
        assert moved is True and champion(client) == "1"
        newest = alias_history(client, MODEL_NAME, "champion")[0]
        assert (newest.from_version, newest.to_version, newest.how, newest.by) == ("2", "1", "auto-rollback", "pod-a")
    finally:
        client.set_registered_model_alias(MODEL_NAME, "champion", "2")


def test_the_proxys_rest_client_refused_by_the_server_is_unavailable_and_changes_nothing(
    team_server, team_users, team_registry, client_as
):
    import asyncio

    from iris_core.errors import RegistryUnavailable

    before = client_as(team_server.admin).get_registered_model(MODEL_NAME)
    with pytest.raises(RegistryUnavailable, match=r"refused the credentials \(401\)"):
        rest_lookup(team_server, User("trainer", "not-the-password")).resolve()
    viewer = rest_lookup(team_server, team_users["viewer"])
    assert viewer.resolve().version == "2"  # every signed-in user may read
    with pytest.raises(RegistryUnavailable, match=r"permission denied by the tracking server \(403\)"):
        asyncio.run(viewer.move_alias_if("champion", "2", "1", how="auto-rollback", reason="x", by="pod-b"))
    with pytest.raises(RegistryUnavailable, match=r"\(403\)"):
        asyncio.run(viewer.set_version_tags("2", {"rollout_outcome": "rolled_back"}))
    after = client_as(team_server.admin).get_registered_model(MODEL_NAME)
    assert (after.aliases, after.tags) == (before.aliases, before.tags)
    assert "rollout_outcome" not in client_as(team_server.admin).get_model_version(MODEL_NAME, "2").tags


def _tool_commands(tmp_path) -> dict:
    predictions = tmp_path / "predictions.jsonl"
    predictions.touch()
    return {
        "registry_tools": ("registry_tools", "list"),
        "steps": ("steps.validate_data", "--data-path", str(REPO / "data" / "iris.csv")),
        "monitor": ("steps.monitor", "--predictions", str(predictions)),
        "serving": ("serving", "--port", str(free_port()), "--log-dir", str(tmp_path / "logs")),
    }


TOOLS = ["registry_tools", "steps", "monitor", "serving"]


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_fails_in_one_line_when_the_server_is_unreachable(tool, tmp_path):
    dead = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    result = project(*_tool_commands(tmp_path)[tool], env=dead, cwd=tmp_path, timeout=90)
    assert_one_line_failure(result, "unreachable")


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_fails_in_one_line_on_a_wrong_password(tool, team_server, team_users, tmp_path):
    wrong = User("trainer", "not-the-password")
    result = project(*_tool_commands(tmp_path)[tool], env=team_server.env(wrong), cwd=tmp_path, timeout=90)
    assert_one_line_failure(result, "refused the credentials")


@pytest.mark.parametrize("problem", ["unreachable", "wrong password"])
def test_mlflow_run_with_the_documented_client_settings_gives_up_and_names_the_cause(problem, team_server, tmp_path):
    """`mlflow run` is MLflow's own command: bounded by the README's settings, its last line says why."""
    if problem == "unreachable":
        env = {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "MLFLOW_TRACKING_USERNAME": "trainer",
            "MLFLOW_TRACKING_PASSWORD": "x",
        }
        cause = "Connection refused"
    else:
        env = team_server.env(User("trainer", "not-the-password"))
        cause = "401"
    result = mlflow_cli(
        "run",
        str(REPO),
        "--env-manager",
        "local",
        "-e",
        "validate_data",
        cwd=tmp_path,
        env={**env, **BOUNDED_RETRIES},
        timeout=120,
    )
    assert result.returncode == 1
    assert cause in result.stderr.strip().splitlines()[-1]


def test_the_script_started_where_postgres_cannot_enter_prints_no_directory_errors(team_server):
    """As root, PostgreSQL's tools run as 'postgres'; started from /root they used to complain seven times."""
    if os.geteuid() == 0:
        reached = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(team_server.started_in)])
        assert reached.returncode != 0  # the situation this test is about
    log = team_server.log.read_text(errors="replace")
    assert "could not change directory" not in log, log[-2000:]


def test_the_server_refuses_a_host_name_it_was_not_started_for(team_server, team_users):
    """--allowed-hosts: a DNS-rebinding page that reaches the port is turned away before auth."""
    trainer = team_users["trainer"]
    search = f"{team_server.uri}/api/2.0/mlflow/experiments/search"
    forged = requests.get(
        search,
        params={"max_results": 1},
        headers={"Host": "evil.example"},
        auth=(trainer.name, trainer.password),
        timeout=60,
    )
    genuine = requests.get(search, params={"max_results": 1}, auth=(trainer.name, trainer.password), timeout=60)
    assert (forged.status_code, genuine.status_code) == (403, 200)


def test_first_start_without_an_admin_password_refuses_in_one_line_and_creates_no_database(tmp_path):
    require_postgres()
    data_dir = Path(tempfile.mkdtemp(prefix="mlflow-team-"))
    try:
        data_dir.chmod(0o755)
        env = {
            **env_without_store(),
            "MLFLOW_TEAM_DATA_DIR": str(data_dir),
            "MLFLOW_TEAM_PORT": str(free_port()),
            "MLFLOW_TEAM_PG_PORT": str(free_port()),
        }
        env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
        result = subprocess.run(
            ["bash", str(START_SCRIPT)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr, result.stderr
        assert not (data_dir / "postgres" / "PG_VERSION").exists()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
