"""Stores that are not there: a closed port, a server that never answers, a mistyped sqlite path.

Each must fail with one line and exit 1 in seconds; the subprocess timeouts below are
generous bounds that only MLflow's default retries (minutes) would exceed.
"""

import socket
import time

import pytest

from tests.helpers.registry_checks import start_cli
from tests.helpers.support import free_port


def finish(proc, timeout: float = 90) -> tuple[int, str, str, float]:
    started = time.monotonic()
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err, time.monotonic() - started


@pytest.mark.parametrize("command", [["list"], ["promote", "1"], ["rollback", "--yes"], ["history"]])
def test_a_closed_port_fails_at_once_with_one_line(command):
    uri = f"http://127.0.0.1:{free_port()}"
    code, out, err, seconds = finish(start_cli("--tracking-uri", uri, *command))
    print(f"{command[0]}: failed after {seconds:.1f} s")
    assert code == 1
    assert err == f"error: tracking server {uri} unreachable: connection refused\n"
    assert out == ""


def test_a_server_that_accepts_but_never_answers_fails_in_seconds_with_one_line():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody ever reads or answers
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code, out, err, seconds = finish(start_cli("--tracking-uri", uri, "list"))
    print(f"silent server: failed after {seconds:.1f} s")
    assert code == 1
    assert err == f"error: tracking server {uri} did not answer within 5 s\n"
