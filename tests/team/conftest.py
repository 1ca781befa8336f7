"""A team tracking server for the session: PostgreSQL + ``mlflow server --app-name basic-auth``.

The server is started by ``deploy/team/start_tracking_server.sh`` itself, exactly as the
README's "Team setup" tells a person to, with its own private PostgreSQL cluster in a
temporary directory on free loopback ports. Without PostgreSQL's server binaries the tests
skip with the reason; under CI (``CI`` set) they fail instead, because there they must run.
"""

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import _LEAKY_ENV, BIN, REPO, build_versions, mlflow_cli
from tests.support import free_port, http_ok, start_logged, stop_process, wait_until

START_SCRIPT = REPO / "deploy" / "team" / "start_tracking_server.sh"
MODEL_NAME = "iris"
EXPERIMENT = "iris-classification"


def postgres_bin() -> Path | None:
    """Where initdb, pg_ctl and psql live: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    for directory in candidates:
        if all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "psql")):
            return directory
    return None


def unavailable_reason() -> str | None:
    """Why a private PostgreSQL cluster cannot be started here, or None when it can."""
    if postgres_bin() is None:
        return "PostgreSQL server binaries not found (apt-get install -y postgresql)"
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            return "running as root and no 'postgres' user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and no runuser to switch to the 'postgres' user"
    return None


def require_postgres() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"team tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class User:
    name: str
    password: str

    def env(self) -> dict:
        return {"MLFLOW_TRACKING_USERNAME": self.name, "MLFLOW_TRACKING_PASSWORD": self.password}


@dataclass(frozen=True)
class TeamServer:
    """A running team server: its URI, its admin, and where it keeps its data."""

    uri: str
    admin: User
    data_dir: Path
    pg_port: int
    log: Path
    started_in: Path  # the script's working directory

    def env(self, user: User | None = None) -> dict:
        """What a client sets to use this server: the URI and, for a user, the credentials."""
        env = {"MLFLOW_TRACKING_URI": self.uri}
        return {**env, **user.env()} if user else env

    def sql(self, query: str) -> list[tuple]:
        """Rows from the server's PostgreSQL database, as the ``mlflow`` role the server uses."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.pg_port,
            user="mlflow",
            dbname="mlflow",
            passfile=str(self.data_dir / "pgpass"),
            connect_timeout=10,
        ) as conn:
            return conn.execute(query).fetchall()


def _stop_cluster(data_dir: Path) -> None:
    """Stop a PostgreSQL the script left behind (it stops it itself on SIGTERM)."""
    pgdata = data_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return
    command = [str(postgres_bin() / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    with contextlib.suppress(subprocess.SubprocessError):
        subprocess.run(command, capture_output=True, timeout=60)


def env_without_store() -> dict:
    """This environment without any store, run or credentials; the venv on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV and k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


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
        _stop_cluster(data_dir)
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
        for name in _LEAKY_ENV:
            patch.delenv(name, raising=False)
        for key, value in trainer.items():
            patch.setenv(key, value)
        patch.chdir(workdir)
        build_versions([{"C": 0.5}])
    return result
