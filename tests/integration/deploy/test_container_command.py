"""The image's CMD and HEALTHCHECK, run outside a container (no Docker engine here).

The files the Dockerfile copies are laid out as WORKDIR, and its CMD runs there with its
ENV, changed only where a test must: loopback instead of 0.0.0.0, a free port instead of
8000, this test's registry as MLFLOW_TRACKING_URI and a token. A COPY that misses a package
the service imports, or an environment variable the code does not read, fails here.
"""

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers.deploy.specs import healthcheck_cmd, image_cmd, image_env, stage_image_files
from tests.helpers.support import free_port, start_logged, while_answering
from tests.helpers.tracking import BIN, sqlite_uri

pytestmark = pytest.mark.slow

START_TIMEOUT = 240
TOKEN = "container-test-token"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def container_env(**overrides) -> dict:
    """This machine's environment without PYTHONPATH (the image has none), plus the image's ENV."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**base, **image_env(), "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}", **overrides}


@contextlib.contextmanager
def started_container(registry_dir: Path, workdir: Path):
    """The CMD started from the staged WORKDIR; yields (base URL, process, env, staged WORKDIR)."""
    app = stage_image_files(workdir / "app")
    port = free_port()
    env = container_env(
        SERVING_HOST="127.0.0.1",
        SERVING_PORT=str(port),
        MLFLOW_TRACKING_URI=sqlite_uri(registry_dir),
        SERVING_API_TOKEN=TOKEN,
    )
    log = workdir / "container.log"
    proc = start_logged(image_cmd(), log, cwd=app, env=env)
    url = f"http://127.0.0.1:{port}"
    with while_answering(proc, f"{url}/health", log, "container command", START_TIMEOUT):
        yield url, proc, env, app


@pytest.fixture(scope="module")
def container(trained_registry, tmp_path_factory):
    """One service for the tests that only ask it things; it only reads the session registry."""
    with started_container(trained_registry, tmp_path_factory.mktemp("container")) as running:
        yield running


def test_the_image_command_serves_the_champion_from_its_environment_variables(container):
    url, _, _, _ = container
    ready = requests.get(f"{url}/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["version"] == "2"
    scored = requests.post(f"{url}/predict", json=ROW, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert scored.status_code == 200
    assert scored.json()["prediction"] == "setosa"
    assert scored.headers["X-Model-Version"] == "2"


def test_the_image_command_requires_the_token_from_the_environment(container):
    url, _, _, _ = container
    assert requests.post(f"{url}/predict", json=ROW, timeout=30).status_code == 401


def test_the_image_healthcheck_passes_against_the_running_service(container):
    _, _, env, app = container
    check = subprocess.run(healthcheck_cmd(), cwd=app, env=env, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_sigterm_as_docker_stop_sends_it_ends_the_service_cleanly(trained_registry, tmp_path):
    with started_container(trained_registry, tmp_path) as (url, proc, _, _):
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=5)


def test_the_image_healthcheck_fails_in_one_line_when_nothing_listens(tmp_path):
    app = stage_image_files(tmp_path / "app")
    env = container_env(SERVING_PORT=str(free_port()))
    check = subprocess.run(healthcheck_cmd(), cwd=app, env=env, capture_output=True, text=True, timeout=30)
    assert check.returncode == 1
    assert len(check.stderr.strip().splitlines()) == 1 and check.stderr.startswith("unhealthy: http://127.0.0.1:")
