"""A team tracking server: PostgreSQL + ``mlflow server --app-name basic-auth``, as ``deploy/team`` starts it.

The session's server is ``tests/integration/team/conftest.py``'s ``team_server``. Without
PostgreSQL's server binaries the tests skip with the reason; under CI (``CI`` set) they fail
instead, because there they must run.
"""

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.tracking import BIN, LEAKY_ENV, REPO

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


def stop_cluster(data_dir: Path) -> None:
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
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def project(module: str, *args: str, env: dict, cwd, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` as a team member runs it: only the environment names the server."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**env_without_store(), **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
