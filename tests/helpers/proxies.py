"""The proxy as a user starts it: `python -m serving` on a free loopback port, in front of `mlflow models serve`.

Tests that need their own stack (a managed upstream, a token, a rollout) start it through
``start_proxy`` or ``running_proxy``; the one shared by the whole session is
``tests/integration/conftest.py``'s ``proxy``.
"""

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.helpers.support import free_port, http_ok, start_logged, stop_process, wait_until
from tests.helpers.tracking import BIN, clean_env, sqlite_uri

START_TIMEOUT = 240  # a loaded 2-core machine can take 40 s to start one `mlflow models serve`
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@dataclass
class RunningProxy:
    """A `python -m serving` process; requests to it always carry a timeout."""

    url: str
    proc: subprocess.Popen
    log: Path
    token: str | None = None  # its --api-token (SERVING_API_TOKEN), which /health's details need

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def predict(self, row: dict = ROW, **kwargs) -> requests.Response:
        return self.post("/predict", json=row, **kwargs)

    def health(self) -> dict:
        """All of /health: with the token when the proxy has one, so the details are there."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.get("/health", headers=headers).json()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def memory(self) -> tuple[int, int]:
        """The proxy process's resident memory now and its peak since ``reset_peak_memory``, in bytes (Linux)."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024

    def reset_peak_memory(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # the kernel's peak RSS starts again from now


def serving_env(registry_dir: Path) -> dict:
    return clean_env(
        {
            "MLFLOW_TRACKING_URI": sqlite_uri(registry_dir),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )


def start_proxy(
    registry_dir: Path, workdir: Path, *args: str, wait_healthy: bool = True, env: dict | None = None
) -> RunningProxy:
    """``python -m serving ARGS`` on a free port, cwd ``workdir``, ``env`` over the registry's; waits for /ping (and /health)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"proxy-{port}.log"
    env = {**serving_env(registry_dir), **(env or {})}
    proc = start_logged([sys.executable, "-m", "serving", "--port", str(port), *args], log, cwd=workdir, env=env)
    token = args[args.index("--api-token") + 1] if "--api-token" in args else env.get("SERVING_API_TOKEN")
    proxy = RunningProxy(f"http://127.0.0.1:{port}", proc, log, token)
    try:
        wait_until(
            lambda: proc.poll() is None and http_ok(f"{proxy.url}/ping"), START_TIMEOUT, what=f"proxy (log: {log})"
        )
        if wait_healthy:
            wait_until(lambda: http_ok(f"{proxy.url}/health"), START_TIMEOUT, what=f"healthy proxy (log: {log})")
    except TimeoutError:
        stop_process(proc)
        raise
    return proxy


def refused_start(
    registry_dir: Path, workdir: Path, *args: str, port: int | str | None = None, env: dict | None = None, **popen
) -> subprocess.CompletedProcess:
    """``python -m serving ARGS --port PORT`` (a free one by default) run to its exit: for a start that must fail."""
    return subprocess.run(
        [sys.executable, "-m", "serving", *args, "--port", str(free_port() if port is None else port)],
        cwd=workdir,
        env={**serving_env(registry_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        **popen,
    )


@contextlib.contextmanager
def running_proxy(registry_dir: Path, workdir: Path, *args: str, wait_healthy: bool = True, env: dict | None = None):
    proxy = start_proxy(registry_dir, workdir, *args, wait_healthy=wait_healthy, env=env)
    try:
        yield proxy
    finally:
        stop_process(proxy.proc, timeout=60)


def shared_upstream_proxy(registry_dir: Path, workdir: Path, upstream_url: str, *args: str, token: str | None = None):
    """``running_proxy`` for version 2 in front of the session's upstream; ``token`` given as SERVING_API_TOKEN."""
    env = {"SERVING_API_TOKEN": token} if token else None
    return running_proxy(
        registry_dir, workdir, "--upstream", upstream_url, "--model-uri", "models:/iris/2", *args, env=env
    )
