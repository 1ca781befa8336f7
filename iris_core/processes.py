"""Servers on this machine: a free loopback port, a bounded wait, a process group stopped for sure.

The proxy starts model servers on free ports; the tests and the benchmarks start proxies,
model servers and tracking servers. They all need these things, done the same way.
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A loopback port nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_running(pid: int) -> bool:
    """Whether process ``pid`` is alive: a zombie, ended but not reaped by its parent yet, is not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel, which cannot tell a zombie
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process
            return True
        return True


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value and return it; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def start_logged(command: list, log: Path, *, cwd=None, env: dict | None = None) -> subprocess.Popen:
    """Start ``command`` in its own session, its output and errors into ``log``.

    Its own session, so that ``stop_process`` stops what it starts in turn (a model server's
    workers) and a Ctrl-C meant for the caller does not reach it first.
    """
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group (the process leads one), then SIGKILL it if it does not exit in time."""
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


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child process: have the kernel send it ``signum`` when its parent dies, even by SIGKILL.

    Linux only (``PR_SET_PDEATHSIG``; elsewhere a no-op). Call it in the child, before exec
    or first thing; the signal comes when the thread that started the child exits.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signum)  # PR_SET_PDEATHSIG
