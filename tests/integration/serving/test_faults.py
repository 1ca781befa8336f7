"""A managed stack whose model server hangs, loses its worker, and whose proxy is killed outright.

One `python -m serving` for the module, following ``models:/iris@champion`` of the session
registry with its own model server, as a user starts it. The tests run in order and each
leaves the stack serving, except the last, which kills the proxy with SIGKILL.
"""

import contextlib
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from iris_core.processes import is_running
from tests.helpers.proxies import START_TIMEOUT, running_proxy
from tests.helpers.steady_load import SteadyLoad
from tests.helpers.support import descendants, wait_until

pytestmark = pytest.mark.slow

TIMEOUT_S = 5.0  # the stack's --timeout
# Hung to degraded: three missed pings, each asked a second after the last and given 2 s (ServingConfig).
DETECTION_S = 3 * (1.0 + 2.0)


@pytest.fixture(scope="module")
def stack(trained_registry, tmp_path_factory):
    with running_proxy(trained_registry, tmp_path_factory.mktemp("faults"), "--timeout", str(TIMEOUT_S)) as proxy:
        yield proxy


def served(stack) -> None:
    wait_until(lambda: stack.get("/health").status_code == 200, START_TIMEOUT, what="a healthy stack")
    assert stack.predict().status_code == 200


def test_a_hung_model_server_costs_no_client_more_than_the_timeout_turns_health_degraded_and_is_restarted(stack):
    served(stack)
    before = stack.health()["upstream"]
    with SteadyLoad(stack, threads=4, max_seconds=START_TIMEOUT + 60, pause=0.05) as load:
        wait_until(lambda: len(load.answers) >= 20, 60, what="the load to start")
        os.killpg(before["pid"], signal.SIGSTOP)  # the whole model server stops answering, its process stays
        stopped_at = time.monotonic()
        wait_until(lambda: stack.get("/health").status_code == 503, 60, interval=0.1, what="degraded health")
        degraded_after = time.monotonic() - stopped_at
        assert "stopped answering" in stack.health()["upstream"]["last_error"]
        wait_until(lambda: not is_running(before["pid"]), 30, what="the hung model server to be killed")
        wait_until(lambda: stack.get("/health").status_code == 200, START_TIMEOUT, what="the restarted model server")
        answered = len(load.answers)
        wait_until(lambda: len(load.answers) >= answered + 20, 60, what="answers from the restarted server")
    statuses = {status for status, _, _ in load.answers}
    slowest = max(seconds for _, seconds, _ in load.answers)
    assert statuses <= {200, 503, 504} and 504 in statuses, statuses
    assert slowest < TIMEOUT_S + 1.0, f"a client waited {slowest:.2f} s with --timeout {TIMEOUT_S:g}"
    assert degraded_after < DETECTION_S + 1.5, f"degraded only after {degraded_after:.1f} s"
    after = stack.health()["upstream"]
    assert after["pid"] != before["pid"] and after["starts"] == before["starts"] + 1
    assert load.answers[-1][0] == 200


def test_killing_the_model_servers_uvicorn_worker_gives_503s_with_retry_after_never_502s(stack):
    served(stack)
    before = stack.health()["upstream"]
    workers = [pid for pid, args in descendants(before["pid"]).items() if "uvicorn" in args]
    assert workers, "the model server runs uvicorn below `mlflow models serve`"
    with SteadyLoad(stack, threads=4, max_seconds=START_TIMEOUT + 60, pause=0.02) as load:
        wait_until(lambda: len(load.answers) >= 20, 60, what="the load to start")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: stack.get("/health").status_code == 503, 30, interval=0.05, what="degraded health")
        wait_until(lambda: stack.get("/health").status_code == 200, START_TIMEOUT, what="the restarted model server")
        answered = len(load.answers)
        wait_until(lambda: len(load.answers) >= answered + 20, 60, what="answers from the restarted server")
    refused = [(status, headers) for status, _, headers in load.answers if status != 200]
    assert refused, "some requests met the dead worker"
    assert {status for status, _ in refused} == {503}, load.failures[:5]
    assert all(int(headers["Retry-After"]) > 0 for _, headers in refused)
    assert stack.health()["upstream"]["starts"] == before["starts"] + 1


def test_the_model_server_listens_only_on_a_unix_socket_that_other_users_cannot_open(stack):
    served(stack)
    upstream = stack.health()["upstream"]
    assert upstream["url"].startswith("unix:")
    socket_path = Path(upstream["url"].removeprefix("unix:"))
    directory = socket_path.parent.stat()
    assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.geteuid()
    assert stat.S_IMODE(Path(upstream["log"]).stat().st_mode) == 0o600  # its stack traces stay private too
    processes = [upstream["pid"], *descendants(upstream["pid"])]
    assert tcp_listeners(processes) == set(), "no TCP port reaches the model server around the proxy"
    assert int(stack.url.rsplit(":", 1)[1]) in tcp_listeners([stack.proc.pid])  # as the proxy's own port does
    if os.geteuid() == 0:  # then the test can be another local user: nobody
        attempt = subprocess.run(
            [
                "/usr/bin/python3",
                "-I",
                "-c",
                f"import socket; socket.socket(socket.AF_UNIX).connect({str(socket_path)!r})",
            ],
            user=65534,
            group=65534,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert attempt.returncode != 0 and "PermissionError" in attempt.stderr, attempt.stderr


def tcp_listeners(pids) -> set[int]:
    """The TCP ports that any of ``pids`` listens on."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_sigkill_of_the_proxy_leaves_no_process_of_the_stack_behind(stack):
    served(stack)
    stack.get("/health")  # the registry helper has been asked at least once by now (it resolved the alias)
    tree = descendants(stack.proc.pid)
    kinds = {
        "model server": [pid for pid, args in tree.items() if "models serve" in args],
        "uvicorn": [pid for pid, args in tree.items() if "uvicorn" in args],
        "registry helper": [pid for pid, args in tree.items() if "multiprocessing.spawn" in args],
        "resource tracker": [pid for pid, args in tree.items() if "resource_tracker" in args],
    }
    assert all(kinds.values()), kinds
    os.kill(stack.proc.pid, signal.SIGKILL)
    stack.proc.wait(timeout=30)
    try:
        wait_until(lambda: not any(is_running(pid) for pid in tree), 30, what="every process of the stack to end")
    finally:
        for pid in tree:  # do not leave them running for the rest of the suite if the test fails
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
