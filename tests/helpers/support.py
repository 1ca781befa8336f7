"""Helpers for tests that start real servers: `mlflow server`, and the loopback helpers of ``iris_core.processes``."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import requests

from iris_core.processes import free_port, start_logged, stop_process, wait_until

__all__ = [
    "free_port",
    "http_ok",
    "mlflow_server",
    "small_tmpfs",
    "start_logged",
    "start_mlflow_server",
    "stop_process",
    "wait_until",
    "while_answering",
]

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "64k"):
    """A tmpfs of ``size`` mounted at ``directory`` (made here), unmounted afterwards: a disk a test can fill.

    Mounting needs root; where it is impossible the test is skipped, saying why.
    """
    import pytest

    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], capture_output=True, timeout=30)


def http_ok(url: str, timeout: float = 2.0, **kwargs) -> bool:
    return requests.get(url, timeout=timeout, **kwargs).status_code == 200


@contextlib.contextmanager
def while_answering(proc: subprocess.Popen, ready_url: str, log: Path, what: str, timeout: float):
    """Wait until the server ``proc`` is alive and ``ready_url`` answers 200; stop it when the block ends, failed or not."""
    try:
        wait_until(lambda: proc.poll() is None and http_ok(ready_url), timeout, what=f"{what} (log: {log})")
        yield proc
    finally:
        stop_process(proc)


def start_mlflow_server(
    backend_store_uri: str, artifacts_dir: Path, port: int, log: Path, *extra: str, env: dict | None = None
) -> subprocess.Popen:
    """``mlflow server`` serving artifacts from ``artifacts_dir`` on loopback ``port``; not waited for."""
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts_dir)]
    command += ["--serve-artifacts", "--workers", "1", *extra]
    # Without job execution: MLflow's job runner is eight more processes importing MLflow.
    quiet = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return start_logged(command, log, env={**os.environ, **quiet, **(env or {})})


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str, artifacts_dir: Path, *extra: str, env: dict | None = None, log: Path | None = None
):
    """A real ``mlflow server`` on a free loopback port; yields its http:// URI."""
    port = free_port()
    log = log or artifacts_dir.parent / f"mlflow-server-{port}.log"
    proc = start_mlflow_server(backend_store_uri, artifacts_dir, port, log, *extra, env=env)
    uri = f"http://127.0.0.1:{port}"
    with while_answering(proc, f"{uri}/health", log, f"mlflow server at {uri}", timeout=90):
        yield uri


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, their children...), with its command line."""
    parents, commands = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                commands[int(entry)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    found, frontier = {}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier and child not in found}
        found.update({child: commands.get(child, "") for child in frontier})
    return found
