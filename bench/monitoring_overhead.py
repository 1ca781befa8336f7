"""What the proxy's metrics and prediction log cost: the same proxy with monitoring off, metrics on, and metrics plus the log.

Starts one `mlflow models serve` of a champion trained by the real pipeline and three
proxies (batching on) in front of it. "off" is the same proxy code with the monitoring
hook removed at start-up (this script patches ``serving.app.install_monitoring`` in that
process only). The loads run one at a time, interleaved over several rounds so that
drifting load from other processes hits every set-up alike; the table gives medians and
each figure's ratio to "off". On a busy machine the round-to-round spread of throughput
and latency can exceed the difference, so it also reports the proxy process's CPU time
per request (read from /proc, the log's writer thread included) and times the
per-request hook in process. It measures and prints; it asserts nothing. From the repository
root:

    python -m bench.monitoring_overhead [--duration 10] [--rounds 3] [--connections 1,64]
"""

import contextlib
import logging
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from bench import options
from bench.loadgen import LoadResult, available_generator, run_load
from bench.serving_benchmark import (
    champion_upstream,
    cpu_seconds,
    server,
)
from iris_core.processes import free_port

_logger = logging.getLogger(__name__)

WITHOUT_MONITORING = (
    "import sys, serving.app, serving.cli; serving.app.install_monitoring = lambda *args: None; "
    "serving.cli.main(sys.argv[1:])"
)
SETUPS = ("off", "metrics", "metrics+log")


def proxy_command(setup: str, upstream: str, port: int, workdir: Path) -> list:
    common = ["--upstream", upstream, "--host", "127.0.0.1", "--port", str(port)]
    if setup == "off":
        return [sys.executable, "-c", WITHOUT_MONITORING, *common]
    if setup == "metrics":
        return [sys.executable, "-m", "serving", *common]
    return [sys.executable, "-m", "serving", *common, "--prediction-log", str(workdir / "predictions.jsonl")]


@dataclass(frozen=True)
class Measurement:
    load: LoadResult
    cpu_us_per_request: float  # the proxy process's CPU; robust to other load, unlike throughput


def render(results: dict, connections: tuple) -> str:
    header = (
        "| set-up | conns | req/s | vs off | p50 ms | vs off | p99 ms | vs off | proxy CPU µs/req | vs off | errors |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    median = lambda runs, get: statistics.median(get(run) for run in runs)  # noqa: E731
    getters = (
        lambda m: m.load.throughput,
        lambda m: m.load.p50_us / 1000,
        lambda m: m.load.p99_us / 1000,
        lambda m: m.cpu_us_per_request,
    )
    for count in connections:
        reference = [median(results[("off", count)], get) for get in getters]
        for setup in SETUPS:
            runs = results[(setup, count)]
            cells = []
            for get, ref, digits in zip(getters, reference, (0, 2, 2, 0)):
                value = median(runs, get)
                cells += [f"{value:.{digits}f}", f"{value / ref:.2f}x" if ref else "-"]
            errors = sum(run.load.error_count for run in runs)
            lines.append(f"| {setup} | {count} | " + " | ".join(cells) + f" | {errors} |")
    return "\n".join(lines)


def recorder_costs(workdir: Path, calls: int = 20_000) -> dict:
    """CPU per single-row request of the per-request hook, in process: the part that runs on the event loop."""
    import time

    from serving.app import ScoredRequest
    from serving.observability.metrics import ProxyMetrics
    from serving.observability.monitoring import recorder
    from serving.observability.prediction_log import PredictionLogWriter
    from serving.registry.model_facts import standing_in

    outcome = ScoredRequest(
        "/invocations",
        200,
        0.0021,
        [[5.1, 3.5, 1.4, 0.2]],
        [{"prediction": "setosa", "prediction_index": 0, "confidence": 0.97, "confidence_scores": {}}],
        "2",
        "0123abcd",
        facts=standing_in(),
        model="iris",
    )
    costs = {}
    metrics_only = recorder(ProxyMetrics(), None)
    writer = PredictionLogWriter(workdir / "micro.jsonl", max_queued_rows=calls + 1)
    with_log = recorder(ProxyMetrics(), writer)  # the writer is not started: submit() only queues
    for name, hook in (("metrics", metrics_only), ("metrics+log", with_log)):
        started = time.perf_counter()
        for _ in range(calls):
            hook(outcome)
        costs[name] = (time.perf_counter() - started) / calls * 1e6
    started = time.perf_counter()
    writer.start()
    writer.close(timeout=120)
    costs["log writer thread, per row"] = (time.perf_counter() - started) / calls * 1e6
    return costs


@click.command(help="Measure the proxy with monitoring off, with metrics, and with metrics and the prediction log.")
@options.duration()
@options.rounds(3, "Interleaved rounds; the table shows medians.")
@options.connections("1,64")
@options.LOADGEN
@options.workdir("Keep the store, logs and prediction log here (default: a temporary directory).")
def main(duration, rounds, connections, loadgen, workdir):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    generator = available_generator(loadgen)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitoring-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        env, upstream, bodies, probe = stack.enter_context(champion_upstream(workdir))
        urls, pids = {}, {}
        for setup in SETUPS:
            port = free_port()
            urls[setup] = f"http://127.0.0.1:{port}/invocations"
            name = setup.replace("+", "-")
            proc = stack.enter_context(
                server(proxy_command(setup, upstream, port, workdir), env, workdir, name, urls[setup], probe)
            )
            pids[setup] = proc.pid
        results = {(setup, count): [] for setup in SETUPS for count in connections}
        for setup in SETUPS:
            run_load(generator, urls[setup], bodies, max(connections), 2)  # warm-up
        for round_ in range(rounds):
            for count in connections:
                for setup in SETUPS:
                    cpu_before = cpu_seconds(pids[setup])
                    load = run_load(generator, urls[setup], bodies, count, duration)
                    cpu = (cpu_seconds(pids[setup]) - cpu_before) * 1e6 / max(load.requests, 1)
                    _logger.info(
                        "round %d, %s, %d connections: %.0f req/s, %.0f µs CPU/req",
                        round_ + 1,
                        setup,
                        count,
                        load.throughput,
                        cpu,
                    )
                    results[(setup, count)].append(Measurement(load, cpu))
        log_lines = (
            sum(1 for _ in open(workdir / "predictions.jsonl", "rb")) if (workdir / "predictions.jsonl").exists() else 0
        )
        costs = recorder_costs(workdir)
    load_average = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    click.echo(
        f"\nsingle-row /invocations, proxy with batching on, {duration:g} s per cell, {rounds} rounds (medians), "
        f"load generator {generator}, {os.cpu_count()} CPUs, load average after the run {load_average}\n"
    )
    click.echo(render(results, connections))
    click.echo(f"\nprediction log: {log_lines} rows written")
    click.echo("\nper single-row request, in process (µs of CPU):")
    for name, micros in costs.items():
        click.echo(f"  {name}: {micros:.1f}")


if __name__ == "__main__":
    main()
