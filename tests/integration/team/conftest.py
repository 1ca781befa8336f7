"""A team tracking server for the session: PostgreSQL + ``mlflow server --app-name basic-auth``.

The server is started by ``deploy/team/start_tracking_server.sh`` itself, exactly as the
README's "Team setup" tells a person to, with its own private PostgreSQL cluster in a
temporary directory on free loopback ports. Without PostgreSQL's server binaries the tests
skip with the reason; under CI (``CI`` set) they fail instead, because there they must run.
"""

import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers.support import free_port, http_ok, start_logged, stop_process, wait_until
from tests.helpers.team import (
    EXPERIMENT,
    START_SCRIPT,
    TeamServer,
    User,
    env_without_store,
    require_postgres,
    stop_cluster,
)
from tests.helpers.tracking import LEAKY_ENV, REPO, build_versions, mlflow_cli


@pytest.fixture(scope="session")
def team_server(tmp_path_factory):
    """The deploy script's server on free loopback ports, with a private cluster; stopped at the end."""
    require_postgres()
    # PostgreSQL runs as 'postgres' when we are root, and pytest's tmp dirs are private to
    # root: keep the data where that user can reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="mlflow-team-"))
    data_dir.chmod(0o755)
    port, pg_port = free_port(), free_port()
    admin = User("admin", secrets.token_urlsafe(16))
    env = {
        **env_without_store(),
        "MLFLOW_TEAM_DATA_DIR": str(data_dir),
        "MLFLOW_TEAM_PORT": str(port),
        "MLFLOW_TEAM_PG_PORT": str(pg_port),
        "MLFLOW_TEAM_WORKERS": "1",
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin.password,
    }
    log = tmp_path_factory.mktemp("team-server") / "server.log"
    # Started from a directory private to this user, as a person starts it from /root: the
    # 'postgres' user cannot enter it, and the script must not mind.
    private = tmp_path_factory.mktemp("team-cwd")
    private.chmod(0o700)
    proc = start_logged(["bash", str(START_SCRIPT)], log, cwd=private, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(
                lambda: proc.poll() is not None or http_ok(f"{uri}/health"), timeout=300, what=f"team server at {uri}"
            )
        except TimeoutError:
            pytest.fail(f"team server did not answer within 300 s; log tail:\n{_tail(log)}", pytrace=False)
        if proc.poll() is not None:
            pytest.fail(f"team server exited with {proc.returncode}; log tail:\n{_tail(log)}", pytrace=False)
        yield TeamServer(uri=uri, admin=admin, data_dir=data_dir, pg_port=pg_port, log=log, started_in=private)
    finally:
        stop_process(proc, timeout=60)
        stop_cluster(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def team_users(team_server):
    """A trainer (who runs the pipeline and so owns what it creates) and a viewer, made by the admin."""
    from mlflow.server.auth.client import AuthServiceClient

    users = {"trainer": User("trainer", secrets.token_urlsafe(16)), "viewer": User("viewer", secrets.token_urlsafe(16))}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in team_server.env(team_server.admin).items():
            patch.setenv(key, value)
        client = AuthServiceClient(team_server.uri)
        for user in users.values():
            client.create_user(user.name, user.password)
    return users


@pytest.fixture(scope="session")
def team_registry(team_server, team_users, tmp_path_factory):
    """Iris v1 from the trainer's real ``mlflow run`` pipeline, v2 (champion) from the same
    pipeline code run in process as the trainer: a second launch would prove nothing new."""
    workdir = tmp_path_factory.mktemp("team-runs")
    trainer = team_server.env(team_users["trainer"])
    result = mlflow_cli(
        "run",
        str(REPO),
        "--env-manager",
        "local",
        "--experiment-name",
        EXPERIMENT,
        "-P",
        "C=1.0",
        cwd=workdir,
        env=trainer,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with pytest.MonkeyPatch.context() as patch:
        for name in LEAKY_ENV:
            patch.delenv(name, raising=False)
        for key, value in trainer.items():
            patch.setenv(key, value)
        patch.chdir(workdir)
        build_versions([{"C": 0.5}])
    return result
