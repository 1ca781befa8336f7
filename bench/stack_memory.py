"""What a following proxy's whole process tree holds in memory, process by process, and which of them import MLflow.

A managed ``python -m serving`` is more than the proxy: with a store other than an http(s)
server it asks the registry through a helper process that imports MLflow (and
multiprocessing's resource tracker beside it), and each version it runs is an `mlflow
models serve` of several processes. For each store kind, this starts the proxy following
``champion`` on version 1 and samples the resident memory (RSS) of each role at idle, after
a rollout to version 2 with version 1 kept warm, and at its peak under load at 64
connections. The proxy runs with ``-X importtime``, which every Python process it starts
itself inherits (the model servers log elsewhere), so its log shows whether anything in the
tree but the model servers imported MLflow.
"""

import contextlib
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.loadgen import LoadResult, run_load
from iris_core.processes import free_port, start_logged, stop_process, wait_until
from iris_core.table.iris import IRIS

_logger = logging.getLogger(__name__)

PAGE = os.sysconf("SC_PAGE_SIZE")
STORES = ("http", "sqlite")
START_TIMEOUT = 300.0
LOAD_CONNECTIONS = 64
PHASES = ("idle", "rollout, 1 warm", f"load, {LOAD_CONNECTIONS} conns (peak)")
ROW = dict(zip(IRIS.feature_names, IRIS.readiness.row))


@dataclass
class Snapshot:
    """Resident bytes by role: "proxy", "registry helper", "resource tracker", "model server vN" (its whole tree)."""

    rss: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rss.values())

    def peak_with(self, other: "Snapshot") -> "Snapshot":
        roles = self.rss.keys() | other.rss.keys()
        return Snapshot({role: max(self.rss.get(role, 0), other.rss.get(role, 0)) for role in roles})


@dataclass
class StackMemory:
    """One store kind's figures: a snapshot per phase, whether MLflow was imported outside the model servers."""

    store: str
    phases: dict[str, Snapshot]
    mlflow_outside_model_servers: bool
    load: LoadResult | None


def processes() -> dict[int, tuple[int, str]]:
    """Every process now: pid -> (parent pid, command line)."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                table[int(entry)] = (parent, handle.read().replace(b"\0", b" ").decode(errors="replace"))
    return table


def rss(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    return 0


def descendants(pid: int, table: dict) -> set[int]:
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, (ppid, _) in table.items() if ppid == parent and child not in found]
        found.update(children)
        frontier.extend(children)
    return found


def snapshot(proxy_pid: int) -> Snapshot:
    """The proxy's tree by role; a model server is named by the version in its command line."""
    table = processes()
    roles = {"proxy": rss(proxy_pid)}
    for child, (parent, command) in table.items():
        if parent != proxy_pid:
            continue
        if " models serve " in command:
            version = command.split("-m models:/", 1)[-1].split()[0].rsplit("/", 1)[-1]
            role = f"model server v{version}"
        elif "resource_tracker" in command:
            role = "resource tracker"
        elif "multiprocessing" in command:
            role = "registry helper"
        else:
            role = "other"
        roles[role] = roles.get(role, 0) + sum(rss(pid) for pid in descendants(child, table))
    return Snapshot(roles)


class TreeSampler:
    """Samples the proxy's tree in a thread, folding each snapshot into ``kept`` with ``keep(kept, new)``."""

    def __init__(self, proxy_pid: int, interval: float, keep):
        self.proxy_pid, self.interval, self.keep = proxy_pid, interval, keep
        self.kept = Snapshot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.kept = self.keep(self.kept, snapshot(self.proxy_pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def each_roles_peak(kept: Snapshot, new: Snapshot) -> Snapshot:
    return kept.peak_with(new)


def largest_total(kept: Snapshot, new: Snapshot) -> Snapshot:
    """The one sample with the largest total: roles peak at different moments, and the sum of
    each role's own peak would be a tree that never existed."""
    return new if new.total > kept.total else kept


@contextlib.contextmanager
def following_proxy(store: str, env: dict, workdir: Path, name: str, python_flags=(), args=()):
    """``python -m serving`` following ``champion`` over ``store`` (an ``mlflow server`` in front of the
    sqlite file for "http"), ready; yields (process, URL, log path)."""
    with contextlib.ExitStack() as stack:
        proxy_env = dict(env)
        if store == "http":
            proxy_env["MLFLOW_TRACKING_URI"] = stack.enter_context(tracking_server(workdir, env))
        port = free_port()
        log = workdir / f"{name}-{store}.log"
        command = [sys.executable, *python_flags, "-m", "serving", "--port", str(port), "--poll-interval", "1", *args]
        proc = start_logged(command, log, cwd=workdir, env=proxy_env)
        stack.callback(stop_process, proc, 60)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/ready", timeout=5).ok, START_TIMEOUT, what=f"the proxy ({log})")
        yield proc, url, log


@contextlib.contextmanager
def tracking_server(workdir: Path, env: dict):
    """An ``mlflow server`` over the benchmark's sqlite store (its model files stay where they are)."""
    port = free_port()
    log = workdir / "tracking-server.log"
    proc = start_logged(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            env["MLFLOW_TRACKING_URI"],
            "--workers",
            "1",
        ],
        log,
        cwd=workdir,
        env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{uri}/health", timeout=2).ok, START_TIMEOUT, what=f"mlflow server ({log})")
        yield uri
    finally:
        stop_process(proc)


def set_champion(env: dict, version: str) -> None:
    from mlflow import MlflowClient

    uri = env["MLFLOW_TRACKING_URI"]
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias("iris", "champion", version)


def answering_version(url: str) -> str | None:
    return requests.post(f"{url}/predict", json=ROW, timeout=30).headers.get("X-Model-Version")


def measure_store(store: str, env: dict, workdir: Path, bodies: Path, generator: str, duration: float) -> StackMemory:
    """The proxy's tree over one kind of store, through the three phases; champion is put back on version 1."""
    set_champion(env, "1")
    flags, args = ("-X", "importtime"), ("--log-dir", str(workdir / f"logs-{store}"))
    with following_proxy(store, env, workdir, "stack", flags, args) as (proc, url, log):
        time.sleep(2)  # let start-up garbage settle
        phases = {PHASES[0]: snapshot(proc.pid)}
        set_champion(env, "2")
        wait_until(lambda: answering_version(url) == "2", START_TIMEOUT, what="the rollout to version 2")
        time.sleep(2)
        phases[PHASES[1]] = snapshot(proc.pid)
        with TreeSampler(proc.pid, 0.25, each_roles_peak) as sampler:
            load = run_load(generator, f"{url}/invocations", bodies, LOAD_CONNECTIONS, duration)
        phases[PHASES[2]] = sampler.kept
    set_champion(env, "1")
    imported = [line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines() if "import time:" in line]
    outside = any(name.split(".")[0] == "mlflow" for name in imported)
    _logger.info("%s store: %.0f MB at idle", store, phases[PHASES[0]].total / 2**20)
    return StackMemory(store, phases, outside, load)


def render(results: list[StackMemory]) -> str:
    """One markdown table: a row per store and phase, a column per role, in MB."""
    roles = ["proxy", "registry helper", "resource tracker", "other"]
    servers = sorted({role for r in results for snap in r.phases.values() for role in snap.rss if "model" in role})
    columns = [role for role in roles if any(role in s.rss for r in results for s in r.phases.values())] + servers
    header = "| store | phase | " + " | ".join(columns) + " | total MB | beyond model servers MB |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for result in results:
        for phase, snap in result.phases.items():
            cells = [f"{snap.rss[role] / 2**20:.0f}" if role in snap.rss else "-" for role in columns]
            beyond = sum(value for role, value in snap.rss.items() if "model server" not in role)
            lines.append(
                f"| {result.store} | {phase} | "
                + " | ".join(cells)
                + f" | {snap.total / 2**20:.0f} | {beyond / 2**20:.0f} |"
            )
    lines.append("")
    for result in results:
        if result.load is not None:
            load = result.load
            lines.append(f"{result.store} store, under load: {load.throughput:.0f} req/s, {load.error_count} errors")
    return "\n".join(lines)
