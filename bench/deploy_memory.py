"""The memory a serving pod needs: the proxy's whole process tree through a cold promotion with one version warm.

That is the pod's worst moment under the defaults (``--keep-warm 1``): the live model
server, the warm one kept for rollback, and the new version's model server starting
beside them, plus the proxy and its registry helper. It trains three versions with the
real pipeline in a temporary store, serves version 1, promotes version 2 (so version 1
stays warm), then promotes version 3 while sampling every process of the tree. It prints
the resident (RSS) and proportional (PSS: shared pages divided among their users, close
to what a container's memory cgroup is charged) totals at rest and at the peak, and the
requests and limits ``deploy/k8s/deployment.yaml`` derives from them. It measures and
prints; it asserts nothing. From the repository root:

    python -m bench.deploy_memory [--interval 0.2]
"""

import contextlib
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import requests

from bench.serving_benchmark import PAGE, tree_pids
from bench.store import store_env, train
from iris_core.processes import free_port, stop_process, wait_until

_logger = logging.getLogger(__name__)

MIB = 2**20
HEADROOM = 1.25  # over the measured peak: model downloads, bigger requests, allocator slack
STEP_MIB = 256


@dataclass(frozen=True)
class Sample:
    """One look at the tree: total RSS and PSS in bytes, and how many model servers it held."""

    rss: int
    pss: int
    model_servers: int


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def sample_tree(root: int) -> Sample:
    rss = pss = servers = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/statm") as handle:
                rss += int(handle.read().split()[1]) * PAGE
            pss += _pss(pid)
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                servers += b"models\0serve" in handle.read()
    return Sample(rss, pss, servers)


class Sampler:
    """Samples the tree in a thread; keeps the peak of each total and the most model servers seen."""

    def __init__(self, root: int, interval: float):
        self.root, self.interval = root, interval
        self.peak = Sample(0, 0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = sample_tree(self.root)
            self.peak = Sample(
                max(self.peak.rss, now.rss),
                max(self.peak.pss, now.pss),
                max(self.peak.model_servers, now.model_servers),
            )

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def rounded_up(size: float) -> int:
    """Whole MiB, rounded up to the next 256 MiB."""
    return math.ceil(size / MIB / STEP_MIB) * STEP_MIB


def promote(env: dict, version: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "registry_tools", "promote", version, "--force", "--reason", "deploy memory benchmark"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def serving(url: str) -> str | None:
    return requests.get(f"{url}/health", timeout=5).json()["model"]["version"]


@click.command(help="Measure the serving pod's process tree through a cold promotion with one version warm.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.2, show_default=True, help="Seconds per sample.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the store and logs here (default: a temporary directory).",
)
def main(interval: float, workdir: Path | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="deploy-memory-") as scratch:
        workdir = workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        env = store_env(workdir)
        for params in ((), ("-P", "C=0.5"), ("-P", "C=0.3")):
            train(workdir, env, *params)
        promote(env, "1")
        port = free_port()
        log = workdir / "proxy.log"
        with open(log, "wb") as out:
            proxy = subprocess.Popen(
                [sys.executable, "-m", "serving", "--port", str(port), "--poll-interval", "1"],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: serving(url) == "1" and requests.get(f"{url}/health", timeout=5).ok, 300, what="v1")
            promote(env, "2")
            wait_until(lambda: serving(url) == "2", 300, what="the switch to version 2")
            time.sleep(3)
            at_rest = sample_tree(proxy.pid)
            with Sampler(proxy.pid, interval) as sampler:
                promote(env, "3")
                wait_until(lambda: serving(url) == "3", 300, interval=0.5, what="the switch to version 3")
                time.sleep(5)  # the version no longer kept warm stops
            after = sample_tree(proxy.pid)
        finally:
            stop_process(proxy, timeout=60)
    peak = sampler.peak
    click.echo(f"\nserving pod process tree, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    click.echo(f"{'':<44}{'RSS MiB':>9}{'PSS MiB':>9}  model servers")
    for label, s in (
        ("at rest: live version 2, version 1 warm", at_rest),
        ("peak while version 3 starts (cold)", peak),
        ("after the switch: live 3, warm 2", after),
    ):
        click.echo(f"{label:<44}{s.rss / MIB:>9.0f}{s.pss / MIB:>9.0f}  {s.model_servers}")
    click.echo(
        f"derived: requests.memory {rounded_up(max(at_rest.rss, after.rss))}Mi (RSS at rest), "
        f"limits.memory {rounded_up(peak.rss * HEADROOM)}Mi (peak RSS x {HEADROOM:g})"
    )


if __name__ == "__main__":
    main()
