"""Live rollout, measured: switching versions, rolling bad ones back by themselves, and what shadowing costs.

It trains two versions with the real pipeline (`mlflow run`) in a temporary store,
registers three bad versions wrapping version 1 (``bench.misbehaving``: one fails on a
share of rows, one is several times slower, one disagrees without errors), puts
``champion`` on version 1, and runs `python -m serving` (which follows the alias):

- **switch**: the default one-step switch; promote version 2 (a cold start: a new `mlflow
  models serve`) and roll back to version 1 (still running, warm), a few times. For each
  move, the time from the registry write to the first answer by the new version, against
  a bare `mlflow models serve` of the same version started here just before.
- **rollback**: a proxy with ``--canary``; under a steady load, promote each bad kind and
  measure the time from the alias move to the automatic rollback (and from the start of
  its canary, once its model server answered), and the requests that failed against the
  requests in that window.
- **shadow**: the same proxy serving version 1 with and without ``--shadow challenger``
  (challenger: version 2), each driven at 64 connections with single-row ``/invocations``
  requests, interleaved over rounds; the throughput and latency of each, and the ratio.
- **shadowed-promotion**: a proxy following ``champion`` (version 1) with ``--shadow
  challenger`` (version 2) under a light load; promote version 2 and measure the time
  from the alias move to its first answer. Its model server is the shadow's, already up,
  so the goal is a warm rollback's: poll interval + 0.5 s.
- **webhooks**: the one-step switch again, the moves made through an `mlflow server` (over
  the same store) that sends its registry webhooks to a proxy with a webhook secret (its
  timed poll every 30 s), then to a proxy that only polls (every ``--poll-interval``): a
  cold promotion and warm moves, alias move to first answer by the new version, one proxy
  at a time. Goal: a warm switch with webhooks under 0.5 s.

It measures and prints, with each goal and ``[met]`` or ``[missed]``; it asserts nothing.
From the repository root:

    python -m bench.rollout_benchmark [--only switch,rollback,shadow,shadowed-promotion,webhooks] [--poll-interval 2]
        [--rounds 3]
"""

import contextlib
import logging
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import requests

from bench import options
from bench.goals import Goal, report
from bench.loadgen import LoadResult, available_generator, run_load
from bench.misbehaving import KINDS, register_misbehaving
from bench.serving_benchmark import write_bodies
from bench.store import store_env, train
from bench.traffic import Traffic
from iris_core.processes import free_port, start_logged, stop_process, wait_until

_logger = logging.getLogger(__name__)

CANARY = (20, 100)
CANARY_STEP_S, BAKE_S, MIN_REQUESTS = 30.0, 10.0, 30
SHADOW_CONNECTIONS = 64
SHADOW_GOAL = 1.25  # with --shadow, the p50 and p99 at 64 connections within this factor of those without


def prepared_store(workdir: Path) -> tuple[dict, dict]:
    """Versions 1 and 2 made by the real pipeline, the bad ones wrapping version 1; champion on version 1."""
    env = store_env(workdir)
    train(workdir, env)
    train(workdir, env, "-P", "C=0.5")
    bad = {name: register_misbehaving(env["MLFLOW_TRACKING_URI"], workdir, "1", **cfg) for name, cfg in KINDS.items()}
    move(registry_client(env), "1", "rollback")
    return env, bad


def bare_start_up(workdir: Path, env: dict, model_uri: str) -> float:
    """Seconds from launching a bare `mlflow models serve` of the model to its first /ping, on this machine now."""
    from serving.upstreams.servers import serve_command

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


def move(client, version: str, how: str, alias: str = "champion") -> float:
    """Point the alias at the version; returns the time (time.time()) just before the registry write."""
    from iris_core.alias_history import move_alias

    moved_at = time.time()
    move_alias(client, "iris", alias, version, how=how, reason="rollout benchmark")
    return moved_at


@contextlib.contextmanager
def proxy(env: dict, workdir: Path, name: str, *args: str):
    """`python -m serving ARGS` on a free port, healthy; yields its URL."""
    port = free_port()
    log = workdir / f"proxy-{name}.log"
    process = start_logged([sys.executable, "-m", "serving", "--port", str(port), *args], log, cwd=workdir, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/health", timeout=2).status_code == 200, 300, what=f"proxy ({log})")
        yield url
    finally:
        stop_process(process, timeout=60)


# -- switch -------------------------------------------------------------------------------------


def measure_switches(env: dict, workdir: Path, poll_interval: float, rounds: int) -> list[str]:
    client = registry_client(env)
    start_up = bare_start_up(workdir, env, "models:/iris/2")  # the cold goal's yardstick, measured here
    rows = []
    with (
        proxy(env, workdir, "switch", "--poll-interval", str(poll_interval)) as url,
        Traffic([url], threads=1, pause=0.005) as clients,
    ):
        clients.first_answer_after("1", 0.0, 60)
        moves = [("promote to a cold version (1 -> 2)", "2", "promote", 300)]
        moves.append(("rollback to the warm version (2 -> 1)", "1", "rollback", 60))
        for _ in range(rounds - 1):
            moves.append(("promote to the warm version (1 -> 2)", "2", "promote", 60))
            moves.append(("rollback to the warm version (2 -> 1)", "1", "rollback", 60))
        for label, version, how, timeout in moves:
            rows.append((label, clients.first_answer_after(version, move(client, version, how), timeout)))
        failed = clients.failed()
    lines = [
        f"switch: one-step switch, poll interval {poll_interval:g} s; alias move -> first answer by the new version"
    ]
    lines += [f"  {label:<40} {seconds:6.2f} s" for label, seconds in rows]
    lines.append(f"  failed requests during all moves: {failed}")
    lines.append(f"  bare `mlflow models serve` of version 2, launch to first /ping: {start_up:.2f} s")
    return [*lines, report(goals(rows, failed, poll_interval, start_up), "switch goals")]


def goals(rows: list[tuple[str, float]], failed: int, poll_interval: float, start_up: float) -> list[Goal]:
    """The live-rollout issue's goals for these moves (label, seconds), failed requests and the measured start-up."""
    cold = max(seconds for label, seconds in rows if "cold" in label)
    warm = max(seconds for label, seconds in rows if "warm" in label)
    cold_goal, warm_goal = poll_interval + start_up, poll_interval + 0.5
    return [
        Goal(
            f"promote to cold <= poll interval + bare start-up ({cold_goal:.1f} s)", cold <= cold_goal, f"{cold:.2f} s"
        ),
        Goal(
            f"rollback to warm <= poll interval + 0.5 s ({warm_goal:.1f} s)", warm <= warm_goal, f"worst {warm:.2f} s"
        ),
        Goal("no failed request during the moves", failed == 0, str(failed)),
    ]


# -- automatic rollback ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollback:
    kind: str
    rolled_back: bool
    share: int | None  # the canary's share of requests when it was rolled back
    from_move_s: float  # alias move -> traffic back on the previous version
    from_canary_s: float  # canary start (the new version answering) -> rollback
    failed: int
    requests: int
    reason: str


def measure_rollbacks(env: dict, bad: dict, workdir: Path, poll_interval: float, threads: int) -> list[str]:
    client = registry_client(env)
    args = ["--poll-interval", str(poll_interval), "--canary", ",".join(map(str, CANARY))]
    args += ["--canary-step", str(CANARY_STEP_S), "--bake", str(BAKE_S), "--min-requests", str(MIN_REQUESTS)]
    results = []
    with proxy(env, workdir, "canary", *args) as url, Traffic([url], threads=threads, pause=0.005) as clients:
        for kind, version in bad.items():
            clients.first_answer_after("1", time.time(), 60)
            moved_at = move(client, version, "promote")
            health = wait_until(lambda v=version: _ended(url, v), 300 + CANARY_STEP_S + BAKE_S, interval=0.1)
            record = health["rollout"]
            window = clients.since(record["started_at"], until=record["at"] + 1.0)
            results.append(
                Rollback(
                    kind,
                    record["state"] == "rolled_back",
                    record.get("share"),
                    record["at"] - moved_at,
                    record["at"] - record["started_at"],
                    sum(1 for answer in window if answer.status != 200),
                    len(window),
                    record.get("reason", ""),
                )
            )
            wait_until(lambda: _champion(client) == "1", 60, what="the alias moved back to version 1")
    share = CANARY[0]
    lines = [
        f"rollback: canary {','.join(map(str, CANARY))}, {CANARY_STEP_S:g} s per step, bake {BAKE_S:g} s, "
        f"min {MIN_REQUESTS} requests, {threads} clients"
    ]
    lines.append(
        f"  {'bad version':<12} {'move->rollback':>14} {'canary->rollback':>16} {'failed/requests':>16}  caught by"
    )
    for r in results:
        caught = r.reason.split(": ", 1)[-1] if r.rolled_back else "NOT ROLLED BACK"
        lines.append(
            f"  {r.kind:<12} {r.from_move_s:12.2f} s {r.from_canary_s:14.2f} s {r.failed:>7}/{r.requests:<8}  {caught}"
        )
    goals = []
    for r in results:
        within = r.rolled_back and r.share is not None and r.share < 100
        step = f"{r.from_canary_s:.2f} s after its canary began" if r.rolled_back else "not rolled back"
        goals.append(Goal(f"{r.kind}: rolled back during the {share}% canary step", within, step))
        goals.append(
            Goal(
                f"{r.kind}: failed requests <= {share}% of the requests in its canary",
                r.failed <= share / 100 * r.requests,
                f"{r.failed} of {r.requests}",
            )
        )
    return [*lines, report(goals, "rollback goals")]


def _ended(url: str, version: str) -> dict | None:
    health = requests.get(f"{url}/health", timeout=5).json()
    record = health.get("rollout") or {}
    ended = record.get("version") == version and record.get("state") in ("rolled_back", "stopped", "completed")
    return health if ended else None


def _champion(client) -> str:
    return str(client.get_registered_model("iris").aliases["champion"])


# -- shadow cost ------------------------------------------------------------------------------------


def measure_shadow(env: dict, workdir: Path, rounds: int, duration: float, generator: str) -> list[str]:
    move(registry_client(env), "2", "promote", alias="challenger")
    bodies = write_bodies(workdir)["/invocations"]
    with (
        proxy(env, workdir, "plain", "--pin") as plain,
        proxy(env, workdir, "shadow", "--pin", "--shadow", "challenger", "--shadow-report-interval", "5") as shadowed,
    ):
        wait_until(
            lambda: (requests.get(f"{shadowed}/health", timeout=5).json()["shadow"] or {}).get("state") == "shadowing",
            300,
            what="the shadow to start",
        )
        results: dict[str, list[LoadResult]] = {"no shadow": [], "--shadow challenger": []}
        for _ in range(rounds):
            for name, url in (("no shadow", plain), ("--shadow challenger", shadowed)):
                results[name].append(run_load(generator, f"{url}/invocations", bodies, SHADOW_CONNECTIONS, duration))
        shadow = requests.get(f"{shadowed}/health", timeout=5).json()["shadow"]
    medians = {
        name: (
            statistics.median(r.throughput for r in runs),
            statistics.median(r.p50_us for r in runs) / 1000,
            statistics.median(r.p99_us for r in runs) / 1000,
            sum(r.error_count for r in runs),
        )
        for name, runs in results.items()
    }
    base = medians["no shadow"]
    lines = [f"shadow: {SHADOW_CONNECTIONS} connections, {generator}, {duration:g} s x {rounds} rounds, medians"]
    lines.append(f"  {'set-up':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, (rps, p50, p99, errors) in medians.items():
        lines.append(f"  {name:<22} {rps:8.0f} {p50:8.2f} {p99:8.2f} {errors:7d}")
    _, p50, p99, _ = medians["--shadow challenger"]
    lines.append(
        f"  shadowed rows {shadow.get('rows')} in {shadow.get('calls')} calls, dropped {shadow.get('dropped_rows')}, "
        f"agreement {shadow.get('agreement')}"
    )
    goals = [
        Goal(f"p50 with --shadow <= {SHADOW_GOAL:g}x without", p50 <= SHADOW_GOAL * base[1], f"{p50 / base[1]:.2f}x"),
        Goal(f"p99 with --shadow <= {SHADOW_GOAL:g}x without", p99 <= SHADOW_GOAL * base[2], f"{p99 / base[2]:.2f}x"),
        Goal("no failed request with --shadow", medians["--shadow challenger"][3] == 0),
    ]
    return [*lines, report(goals, "shadow goals")]


# -- promotion of a shadowed challenger -----------------------------------------------------------


def measure_shadowed_promotion(env: dict, workdir: Path, poll_interval: float) -> list[str]:
    """Promote the version ``--shadow challenger`` kept running: it should switch like a warm rollback."""
    client = registry_client(env)
    move(client, "1", "rollback")
    move(client, "2", "promote", alias="challenger")
    args = ("--poll-interval", str(poll_interval), "--shadow", "challenger")
    with proxy(env, workdir, "shadowed-promotion", *args) as url, Traffic([url], threads=1, pause=0.005) as clients:
        wait_until(
            lambda: (requests.get(f"{url}/health", timeout=5).json()["shadow"] or {}).get("state") == "shadowing",
            300,
            what="the shadow to start",
        )
        clients.first_answer_after("1", 0.0, 60)
        seconds = clients.first_answer_after("2", move(client, "2", "promote"), 60)
        failed = clients.failed()
    move(client, "1", "rollback")
    goal = poll_interval + 0.5
    lines = [
        f"shadowed promotion: poll interval {poll_interval:g} s, --shadow challenger on version 2",
        f"  {'promote the shadowed challenger (1 -> 2)':<40} {seconds:6.2f} s",
        f"  failed requests during the move: {failed}",
    ]
    goals = [
        Goal(
            f"promote the shadowed challenger <= poll interval + 0.5 s ({goal:.1f} s)",
            seconds <= goal,
            f"{seconds:.2f} s",
        ),
        Goal("no failed request during the move", failed == 0, str(failed)),
    ]
    return [*lines, report(goals, "shadowed promotion goals")]


# -- webhooks against polling ------------------------------------------------------------------------


WEBHOOK_WARM_GOAL_S = 0.5  # alias move -> first answer by a warm version, with webhooks


def measure_webhooks(env: dict, workdir: Path, poll_interval: float, rounds: int) -> list[str]:
    """The same moves through an `mlflow server`, to a proxy its webhooks prompt and then to one that only polls.

    One proxy at a time, each started on version 1 with nothing else running, so both pay
    the same cold start for version 2 on the same idle cores. The webhook proxy keeps its
    default poll interval (30 s with a webhook secret); the other polls every ``poll_interval``.
    """
    from cryptography.fernet import Fernet

    from bench.stack_memory import tracking_server
    from registry_tools.webhooks import create_webhook

    move(registry_client(env), "1", "rollback")  # straight into the database: no webhook event yet
    server_env = {
        **env,
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    secret = secrets.token_urlsafe(32)
    with tracking_server(workdir, server_env) as uri:
        client = registry_client({"MLFLOW_TRACKING_URI": uri})
        webhook_env = {**env, "MLFLOW_TRACKING_URI": uri, "SERVING_WEBHOOK_SECRET": secret}
        with proxy(webhook_env, workdir, "webhooks") as url:
            made = create_webhook(client, f"{url}/webhooks/mlflow", secret, "rollout-benchmark", "rollout benchmark")
            try:
                prompted, failed_prompted = _timed_moves(client, url, rounds, poll_interval)
            finally:
                client.delete_webhook(made.id)
        deliveries = (workdir / "proxy-webhooks.log").read_text().count("polling the registry now")
        polling_env = {**env, "MLFLOW_TRACKING_URI": uri}
        with proxy(polling_env, workdir, "polling", "--poll-interval", str(poll_interval)) as url:
            polled, failed_polled = _timed_moves(client, url, rounds, poll_interval)
    failed = {"webhooks": failed_prompted, "polling": failed_polled}
    return webhook_report(prompted, polled, failed, deliveries, poll_interval)


def _timed_moves(client, url: str, rounds: int, poll_interval: float) -> tuple[list[tuple[str, float]], int]:
    """A cold promotion 1 -> 2, then warm moves back and forth, ending on 1; (label, seconds) each, failed requests."""
    moves = [("promote to a cold version (1 -> 2)", "2", "promote", 300)]
    moves.append(("rollback to the warm version (2 -> 1)", "1", "rollback", 60))
    for _ in range(rounds - 1):
        moves.append(("promote to the warm version (1 -> 2)", "2", "promote", 60))
        moves.append(("rollback to the warm version (2 -> 1)", "1", "rollback", 60))
    rows = []
    with Traffic([url], threads=1, pause=0.005) as clients:
        clients.first_answer_after("1", 0.0, 60)
        for label, version, how, timeout in moves:
            rows.append((label, clients.first_answer_after(version, move(client, version, how), timeout)))
            # The switch settles before the next move, which lands at a random point of the polling proxy's
            # interval: a fixed pause close to the interval would move at the same phase of it every time.
            time.sleep(random.uniform(1.0, 1.0 + poll_interval))
        failed = clients.failed()
    return rows, failed


def webhook_report(prompted, polled, failed: dict, deliveries: int, poll_interval: float) -> list[str]:
    lines = [
        "webhooks: moves through an `mlflow server`; alias move -> first answer by the new version",
        f"  {'move':<40} {'webhooks (poll 30 s)':>20} {f'polling (poll {poll_interval:g} s)':>20}",
    ]
    for (label, with_webhooks), (_, with_polling) in zip(prompted, polled):
        lines.append(f"  {label:<40} {with_webhooks:18.2f} s {with_polling:18.2f} s")
    warm = {name: [s for label, s in rows if "warm" in label] for name, rows in (("w", prompted), ("p", polled))}
    figures = {name: f"{statistics.median(s):.2f} / {max(s):.2f} s" for name, s in warm.items()}
    lines.append(f"  {'warm moves: median / worst':<40} {figures['w']:>20} {figures['p']:>20}")
    lines.append(f"  deliveries that prompted a poll: {deliveries} of {len(prompted)} moves")
    lines.append(f"  failed requests: {failed['webhooks']} with webhooks, {failed['polling']} polling")
    worst = max(warm["w"])
    goals = [
        Goal(
            f"warm switch with webhooks < {WEBHOOK_WARM_GOAL_S:g} s",
            worst < WEBHOOK_WARM_GOAL_S,
            f"worst {worst:.2f} s",
        ),
        Goal("no failed request during the moves", not any(failed.values()), str(sum(failed.values()))),
    ]
    return [*lines, report(goals, "webhook goals")]


PARTS = ("switch", "rollback", "shadow", "shadowed-promotion", "webhooks")


@click.command(
    help="Print the times of live switches and automatic rollbacks, the cost of shadowing, and switches prompted "
    "by MLflow's webhooks against polling."
)
@click.option(
    "--only",
    default=",".join(PARTS),
    show_default=True,
    help="Comma-separated parts to run: switch, rollback, shadow, shadowed-promotion, webhooks.",
)
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True)
@options.rounds(3, "Warm moves; shadow rounds.")
@click.option("--clients", type=click.IntRange(min=1), default=8, show_default=True, help="Load during rollbacks.")
@options.duration(help="Seconds per load.")
@options.LOADGEN
@options.workdir()
def main(only, poll_interval, rounds, clients, duration, loadgen, workdir) -> None:
    parts = [part.strip() for part in only.split(",") if part.strip()]
    if not parts or set(parts) - set(PARTS):
        raise click.UsageError(f"--only takes some of {', '.join(PARTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    generator = available_generator(loadgen)
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as scratch:
        workdir = workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        env, bad = prepared_store(workdir)
        report = [f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start"]
        try:
            if "switch" in parts:
                report += measure_switches(env, workdir, poll_interval, rounds)
                move(registry_client(env), "1", "rollback")
            if "rollback" in parts:
                report += measure_rollbacks(env, bad, workdir, poll_interval, clients)
            if "shadow" in parts:
                report += measure_shadow(env, workdir, rounds, duration, generator)
            if "shadowed-promotion" in parts:
                report += measure_shadowed_promotion(env, workdir, poll_interval)
            if "webhooks" in parts:
                report += measure_webhooks(env, workdir, poll_interval, rounds)
        except TimeoutError as exc:  # a version that never answered: one line, not a traceback
            raise click.ClickException(str(exc)) from None
    click.echo("\n" + "\n".join(report))


if __name__ == "__main__":
    main()
