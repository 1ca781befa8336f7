"""How long a live rollout takes: from an alias move to the first answer by the new version.

It trains two versions with the real pipeline (`mlflow run`) in a temporary store, puts
``champion`` on version 1, starts `python -m serving` (which follows the alias), and
keeps one client asking ``/predict`` every few milliseconds. Then it promotes version 2
(a cold start: a new `mlflow models serve`) and rolls back to version 1 (still running,
warm), a few times, and prints for each move the time from the registry write to the
first response whose ``X-Model-Version`` is the new version, next to the goals of the
live-rollout issue; the cold goal is measured against a bare `mlflow models serve` of the
same version started here just before. It measures and prints; it asserts nothing. From
the repository root:

    python -m bench.rollout_benchmark [--poll-interval 2] [--rounds 3]
"""

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import requests

from bench.goals import Goal, report
from bench.store import store_env, train
from iris_core.processes import free_port, stop_process, wait_until

_logger = logging.getLogger(__name__)

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def store_with_two_versions(workdir: Path) -> dict:
    """Versions 1 and 2 of `iris` made by the real pipeline; the environment that points at them."""
    env = store_env(workdir)
    train(workdir, env)
    train(workdir, env, "-P", "C=0.5")
    return env


class Watcher:
    """One keep-alive client asking /predict in a loop; remembers when each version first answered."""

    def __init__(self, url: str, pause: float = 0.005):
        self.url, self.pause = url, pause
        self.failed = 0
        self._first_seen: dict[str, list[float]] = {}
        self._last: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    response = session.post(f"{self.url}/predict", json=ROW, timeout=30)
                    version = response.headers.get("X-Model-Version") if response.status_code == 200 else None
                except requests.RequestException:
                    version = None
                answered_at = time.monotonic()
                if version is None:
                    self.failed += 1
                elif version != self._last:
                    self._first_seen.setdefault(version, []).append(answered_at)
                    self._last = version
                time.sleep(self.pause)

    def first_answer_after(self, version: str, since: float, timeout: float) -> float:
        """Seconds from ``since`` to the first answer by ``version`` after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self._first_seen.get(version, []) if t >= since]
            if later:
                return later[0] - since
            time.sleep(0.005)
        raise click.ClickException(f"version {version} did not answer within {timeout:g} s")


def bare_start_up(workdir: Path, env: dict, model_uri: str) -> float:
    """Seconds from launching a bare `mlflow models serve` of the model to its first /ping, on this machine now."""
    from serving.upstream import serve_command

    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        serve_command(model_uri, port),
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok, 300, 0.05, what="models serve")
        return time.monotonic() - started
    finally:
        stop_process(proc)


def registry_client(env: dict):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])


def move(client, version: str, how: str) -> float:
    """Point champion at the version; returns the monotonic time just before the registry write."""
    from iris_core.alias_history import move_alias

    moved_at = time.monotonic()
    move_alias(client, "iris", "champion", version, how=how, reason="rollout benchmark")
    return moved_at


@click.command(help="Print the time from an alias move to the first answer by the new version, cold and warm.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="The proxy's --poll-interval.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Warm promote/rollback pairs after the cold start.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the store and logs here (default: a temporary directory).",
)
def main(poll_interval: float, rounds: int, workdir: Path | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as scratch:
        workdir = workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        env = store_with_two_versions(workdir)
        client = registry_client(env)
        move(client, "1", "rollback")  # also opens the store, so no later move pays for that
        start_up = bare_start_up(workdir, env, "models:/iris/2")  # the cold goal's yardstick, measured here
        port = free_port()
        log = workdir / "proxy.log"
        with open(log, "wb") as out:
            proxy = subprocess.Popen(
                [sys.executable, "-m", "serving", "--port", str(port), "--poll-interval", str(poll_interval)],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: requests.get(f"{url}/health", timeout=2).status_code == 200, 300, what=f"the proxy (log: {log})"
            )
            rows = []
            with Watcher(url) as watcher:
                watcher.first_answer_after("1", 0.0, 60)
                rows.append(
                    (
                        "promote to a cold version (1 -> 2)",
                        watcher.first_answer_after("2", move(client, "2", "promote"), 300),
                    )
                )
                rows.append(
                    (
                        "rollback to the warm version (2 -> 1)",
                        watcher.first_answer_after("1", move(client, "1", "rollback"), 60),
                    )
                )
                for _ in range(rounds - 1):
                    rows.append(
                        (
                            "promote to the warm version (1 -> 2)",
                            watcher.first_answer_after("2", move(client, "2", "promote"), 60),
                        )
                    )
                    rows.append(
                        (
                            "rollback to the warm version (2 -> 1)",
                            watcher.first_answer_after("1", move(client, "1", "rollback"), 60),
                        )
                    )
            failed = watcher.failed
        finally:
            stop_process(proxy, timeout=60)
    click.echo(
        f"\nlive rollout, poll interval {poll_interval:g} s, {os.cpu_count()} CPUs; alias move -> first answer by the new version"
    )
    for label, seconds in rows:
        click.echo(f"  {label:<40} {seconds:6.2f} s")
    click.echo(f"  failed requests during all moves: {failed}")
    click.echo(f"  bare `mlflow models serve` of version 2, launch to first /ping: {start_up:.2f} s")
    click.echo(report(goals(rows, failed, poll_interval, start_up)))


def goals(rows: list[tuple[str, float]], failed: int, poll_interval: float, start_up: float) -> list[Goal]:
    """The live-rollout issue's goals for these moves (label, seconds), failed requests and the measured start-up."""
    cold = [seconds for label, seconds in rows if "cold" in label]
    warm = [seconds for label, seconds in rows if "warm" in label]
    cold_goal, warm_goal = poll_interval + start_up, poll_interval + 0.5
    return [
        Goal(
            f"promote to cold <= poll interval + bare start-up ({cold_goal:.1f} s)",
            max(cold) <= cold_goal,
            f"{max(cold):.2f} s",
        ),
        Goal(
            f"rollback to warm <= poll interval + 0.5 s ({warm_goal:.1f} s)",
            max(warm) <= warm_goal,
            f"worst {max(warm):.2f} s",
        ),
        Goal("no failed request during the moves", failed == 0, str(failed)),
    ]


if __name__ == "__main__":
    main()
