"""Figures for the proxy's fault guarantees: a hung model server, a killed uvicorn worker, a killed proxy.

``python -m bench.fault_figures`` trains a champion with the real pipeline in a temporary
store, starts ``python -m serving --timeout T`` with its own model server, and while a few
clients post ``/predict`` without pause:

- stops the model server (SIGSTOP of its process group): the slowest answer, the statuses,
  how long until ``/health`` is degraded and until it is healthy again;
- kills its uvicorn worker (SIGKILL): the statuses (no 502, no reset), the slowest answer;
- kills the proxy (SIGKILL): how long until every process it started is gone.

It prints the figures and the README's guarantees as goals, ``[met]`` or ``[missed]``;
``tests/integration/serving/test_faults.py`` checks the same behaviours without the figures.
"""

import collections
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import requests

from bench import options
from bench.goals import Goal, report
from bench.serving_benchmark import build_champion, server, tree_pids
from iris_core.processes import free_port, is_running, wait_until
from iris_core.table.iris import IRIS
from serving.config import ServingConfig

ROW = dict(zip(IRIS.feature_names, IRIS.readiness.row))
C = ServingConfig
# The longest a hung server can go unnoticed: the misses in a row, each asked after the interval.
DETECTION_S = C.liveness_misses * (C.liveness_interval + C.liveness_timeout)
RESTART_TIMEOUT_S = 300.0


class Load:
    """``clients`` threads posting /predict on keep-alive connections until stopped; every answer recorded."""

    def __init__(self, url: str, clients: int):
        self.url, self.answers = url, []  # (status or the exception's name, seconds, has Retry-After)
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        time.sleep(2)  # a few answers before anything happens
        return self

    def __exit__(self, *exc):
        time.sleep(2)  # and a few after
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = session.post(f"{self.url}/predict", json=ROW, timeout=120)
                    outcome = (answer.status_code, "Retry-After" in answer.headers)
                except requests.RequestException as exc:
                    outcome = (type(exc).__name__, False)
                with self._lock:
                    self.answers.append((outcome[0], time.monotonic() - started, outcome[1]))
                time.sleep(0.02)

    def summary(self) -> str:
        statuses = collections.Counter(status for status, _, _ in self.answers)
        slowest = max(seconds for _, seconds, _ in self.answers)
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str))
        return f"{len(self.answers)} answers ({counts}), slowest {slowest:.2f} s"


def health(url: str) -> requests.Response:
    return requests.get(f"{url}/health", timeout=10)


def seconds_until(predicate, timeout: float) -> float:
    started = time.monotonic()
    wait_until(predicate, timeout, interval=0.05, what="the condition")
    return time.monotonic() - started


def hung(url: str, clients: int, timeout: float) -> tuple[list[str], list[Goal]]:
    pid = health(url).json()["upstream"]["pid"]
    with Load(url, clients) as load:
        os.killpg(pid, signal.SIGSTOP)
        degraded = seconds_until(lambda: health(url).status_code == 503, 60)
        healthy = degraded + seconds_until(lambda: health(url).status_code == 200, RESTART_TIMEOUT_S)
    slowest = max(seconds for _, seconds, _ in load.answers)
    lines = [
        f"model server stopped (SIGSTOP): {load.summary()}",
        f"  degraded after {degraded:.1f} s, healthy again after {healthy:.1f} s",
    ]
    return lines, [
        Goal(f"every answer within --timeout ({timeout:g} s) + 0.25 s", slowest <= timeout + 0.25, f"{slowest:.2f} s"),
        Goal(f"degraded within {DETECTION_S:g} s + 1 s", degraded <= DETECTION_S + 1, f"{degraded:.1f} s"),
    ]


def worker_killed(url: str, clients: int) -> tuple[list[str], list[Goal]]:
    wrapper = health(url).json()["upstream"]["pid"]
    workers = [pid for pid in tree_pids(wrapper) if pid != wrapper]
    with Load(url, clients) as load:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        seconds_until(lambda: health(url).status_code == 503, 60)
        healthy = seconds_until(lambda: health(url).status_code == 200, RESTART_TIMEOUT_S)
    refused = [(status, retry) for status, _, retry in load.answers if status != 200]
    only_503 = all(status == 503 and retry for status, retry in refused)
    lines = [f"uvicorn worker killed (SIGKILL): {load.summary()}", f"  healthy again after {healthy:.1f} s"]
    return lines, [Goal("only 503 with Retry-After while it is down: no 502, no reset", only_503, load.summary())]


def proxy_killed(proxy) -> tuple[list[str], list[Goal]]:
    processes = tree_pids(proxy.pid) - {proxy.pid}
    os.kill(proxy.pid, signal.SIGKILL)
    proxy.wait(timeout=30)
    gone = seconds_until(lambda: not any(is_running(pid) for pid in processes), 60)
    lines = [f"proxy killed (SIGKILL): its {len(processes)} processes gone after {gone:.2f} s"]
    return lines, [Goal("no process of the stack left within 5 s", gone <= 5, f"{gone:.2f} s")]


@click.command(help="Print what a hung or killed model server and a killed proxy cost the clients.")
@click.option("--timeout", type=click.FloatRange(min=1), default=5.0, show_default=True, help="The proxy's --timeout.")
@click.option("--clients", type=click.IntRange(min=1), default=4, show_default=True)
@options.workdir()
def main(timeout, clients, workdir) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="fault-figures-") as scratch:
        workdir = workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        env = build_champion(workdir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "serving", "--port", str(port), "--timeout", str(timeout)]
        lines = [f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start, --timeout {timeout:g} s"]
        goals: list[Goal] = []
        probe = json.dumps(ROW).encode()
        with server(command, env, workdir, "proxy", f"{url}/predict", probe) as proxy:
            for measure in (lambda: hung(url, clients, timeout), lambda: worker_killed(url, clients)):
                found, met = measure()
                lines, goals = lines + found, goals + met
            found, met = proxy_killed(proxy)
            lines, goals = lines + found, goals + met
    click.echo("\n" + "\n".join(lines) + "\n" + report(goals))


if __name__ == "__main__":
    main()
