"""The memory a serving pod needs: the proxy's whole process tree through a cold promotion with one version warm.

That is the pod's worst moment under the defaults (``--keep-warm 1``): the live model
server, the warm one kept for rollback, and the new version's model server starting
beside them, plus the proxy (and, with a store other than an http(s) tracking server, its
registry helper, which imports MLflow). It trains three versions with the real pipeline in
a temporary store and, for each kind of store, serves version 1, promotes version 2 (so
version 1 stays warm), then promotes version 3 while sampling every process of the tree
(``bench.stack_memory``, role by role), keeping the sample with the largest total. It
prints the resident totals at rest and at that peak, and the requests and limits ``deploy/k8s/deployment.yaml`` derives from them. It
measures and prints; it asserts nothing. From the repository root:

    python -m bench.deploy_memory [--stores http,sqlite]
"""

import logging
import math
import os
import tempfile
import time
from pathlib import Path

import click
import requests

from bench import options
from bench.stack_memory import STORES, Snapshot, TreeSampler, following_proxy, largest_total, set_champion, snapshot
from bench.store import store_env, train
from iris_core.processes import wait_until

_logger = logging.getLogger(__name__)

MIB = 2**20
HEADROOM = 1.25  # over the measured peak: model downloads, bigger requests, allocator slack
STEP_MIB = 256
START_TIMEOUT = 300.0


def model_servers(snap: Snapshot) -> int:
    return sum("model server" in role for role in snap.rss)


def rounded_up(size: float) -> int:
    """Whole MiB, rounded up to the next 256 MiB."""
    return math.ceil(size / MIB / STEP_MIB) * STEP_MIB


def serving(url: str) -> str | None:
    return requests.get(f"{url}/health", timeout=5).json()["model"]["version"]


def measure(store: str, env: dict, workdir: Path, interval: float) -> dict[str, Snapshot]:
    """At rest (live 2, warm 1), the peak while version 3 starts, and after the switch (live 3, warm 2)."""
    set_champion(env, "1")
    with following_proxy(store, env, workdir, "proxy") as (proxy, url, _):
        set_champion(env, "2")
        wait_until(lambda: serving(url) == "2", START_TIMEOUT, what="the switch to version 2")
        time.sleep(3)
        moments = {"at rest": snapshot(proxy.pid)}
        with TreeSampler(proxy.pid, interval, largest_total) as sampler:
            set_champion(env, "3")
            wait_until(lambda: serving(url) == "3", START_TIMEOUT, interval=0.5, what="the switch to version 3")
            time.sleep(5)  # the version no longer kept warm stops
        moments["peak"] = sampler.kept
        moments["after"] = snapshot(proxy.pid)
    return moments


@click.command(help="Measure the serving pod's process tree through a cold promotion with one version warm.")
@click.option("--stores", default=",".join(STORES), show_default=True, help="Kinds of store: http, sqlite.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.2, show_default=True, help="Seconds per sample.")
@options.workdir()
def main(stores: str, interval: float, workdir: Path | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kinds = [kind for kind in stores.split(",") if kind]
    if not kinds or set(kinds) - set(STORES):
        raise click.BadParameter(f"a comma-separated list of {', '.join(STORES)}", param_hint="--stores")
    with tempfile.TemporaryDirectory(prefix="deploy-memory-") as scratch:
        workdir = workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        env = store_env(workdir)
        for params in ((), ("-P", "C=0.5"), ("-P", "C=0.3")):
            train(workdir, env, *params)
        results = {kind: measure(kind, env, workdir, interval) for kind in kinds}
    click.echo(f"\nserving pod process tree, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    click.echo("| store | moment | RSS MiB | model servers | by role (MiB) |")
    click.echo("|---|---|---|---|---|")
    for kind, moments in results.items():
        for moment, snap in moments.items():
            roles = ", ".join(f"{role} {size / MIB:.0f}" for role, size in sorted(snap.rss.items()))
            click.echo(f"| {kind} | {moment} | {snap.total / MIB:.0f} | {model_servers(snap)} | {roles} |")
    rest = max(max(m["at rest"].total, m["after"].total) for m in results.values())
    peak = max(m["peak"].total for m in results.values())
    click.echo(
        f"derived: requests.memory {rounded_up(rest)}Mi (the largest tree at rest), "
        f"limits.memory {rounded_up(peak * HEADROOM)}Mi (the largest peak x {HEADROOM:g})"
    )


if __name__ == "__main__":
    main()
