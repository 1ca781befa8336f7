"""Helpers for tests that start real servers: free loopback ports, bounded waits, `mlflow server`."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def http_ok(url: str, timeout: float = 2.0, **kwargs) -> bool:
    return requests.get(url, timeout=timeout, **kwargs).status_code == 200


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL it if it does not exit in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts_dir: Path, *extra: str, env: dict | None = None, log: Path | None = None):
    """A real ``mlflow server`` on a free loopback port; yields its http:// URI."""
    port = free_port()
    log = log or artifacts_dir.parent / f"mlflow-server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"), "server",
                "--host", "127.0.0.1", "--port", str(port),
                "--backend-store-uri", backend_store_uri,
                "--artifacts-destination", str(artifacts_dir),
                "--serve-artifacts", "--workers", "1",
                *extra,
            ],
            stdout=out, stderr=subprocess.STDOUT,
            # Without job execution: MLflow's job runner is eight more processes importing MLflow.
            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_ok(f"{uri}/health"), timeout=90, what=f"mlflow server at {uri} (log: {log})")
        yield uri
    finally:
        stop_process(proc)
