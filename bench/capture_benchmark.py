"""What the capture costs: the proxy's throughput with capture on and off, the bytes a captured row takes, and
`monitor` over a whole capture against one hour of it.

It trains a champion with the real pipeline (`mlflow run`) in a temporary store, starts one
`mlflow models serve` of it and, in front of it on loopback, the proxy (batching on) without
and with ``--capture-uri`` to a local directory. Then:

1. both proxies are driven with single-row ``/invocations`` at 64 connections by the serving
   benchmark's load generator, in interleaved rounds (off, on, on, off, ...) so that other
   work on the machine hits both alike; medians, and the goal: capture on within 5% of off.
   Two more capturing proxies, each with one part taken out in its process (the capture's
   recorder; the answer memory that ``POST /feedback`` needs), show what each part costs;
2. a third proxy, capturing, answers ``--rows`` rows (10 million by default) sent as
   10,000-row requests by the same generator, and a share of them sent one by one and
   labeled through ``POST /feedback``; the bytes its Parquet files take per row. Its
   capture's clock counts rows (``bench.capture_clock``): an hour passes every
   ``rows / hours`` rows, so the capture spans ``--hours`` hours of partitions, as hours of
   real traffic would;
3. ``python -m steps.monitor --predictions <capture> --feedback <capture>`` over an empty
   hour, over the capture's last hour and over the whole capture: wall time and the
   process's peak RSS (``os.wait4``). The goal: memory bounded by the window, not by the
   capture.

It binds to 127.0.0.1 only and bounds every load in time. From the repository root:

    python -m bench.capture_benchmark [--rows 10000000] [--hours 10] [--duration 10] [--rounds 5]
"""

import contextlib
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import requests

from bench import options
from bench.capture_clock import PROXY_WITH_ROW_CLOCK, ROWS_PER_HOUR_ENV, START_ENV
from bench.goals import Goal, report
from bench.loadgen import LoadResult, available_generator, run_load
from bench.serving_benchmark import (
    FEATURES,
    champion_upstream,
    cpu_seconds,
    load_average,
    server,
)
from bench.store import REPO
from iris_core.capture import FEEDBACK, HOUR_S, PREDICTIONS
from iris_core.processes import free_port

_logger = logging.getLogger(__name__)

CONNECTIONS = 64
LABELED_SHARE = 0.02  # of the captured rows, sent one request at a time and then labeled
MONITOR_TIMEOUT_S = 1800.0
HTTP_TIMEOUT_S = 60.0
THROUGHPUT_CAPTURE, CAPTURE = "throughput-capture", "capture"  # under the work directory
# The throughput's set-ups: the proxy's command as it is, or with one part of the capture taken out in its
# process, to show what each part costs ("on" turns POST /feedback on, whose answer memory is the other part).
SETUPS = {
    "off": None,
    "on": None,
    "on, without the capture's recorder": (
        "import sys, serving.capture.recorder as r, serving.cli; r.Capture.record = lambda self, outcome: None; "
        "serving.cli.main(sys.argv[1:])"
    ),
    "on, without the answer memory": (
        "import sys, serving.feedback.service as f, serving.cli; f.FeedbackService.remember = lambda self, o: None; "
        "serving.cli.main(sys.argv[1:])"
    ),
}
SUMMARY = re.compile(r"^\S+ version \S+: (\w+) \((?:live accuracy [\d.]+, )?(\d+) (labeled )?rows\)$", re.M)


# -- pure parts ----------------------------------------------------------------------------------


def within(on: float, off: float, tolerance: float = 0.05) -> bool:
    """Whether ``on`` is at most ``tolerance`` below ``off``."""
    return off > 0 and on >= (1 - tolerance) * off


def memory_bounded_by_window(base: int, window: int, whole: int, share: float) -> bool:
    """Whether what a window adds to monitor's fixed memory is at most twice its share of what the whole adds.

    ``share`` is the window's rows over the whole's: memory that grows with the rows read
    passes, memory that grows with the capture (a window paying for all of it) does not.
    """
    return whole > base and window - base <= 2 * share * (whole - base)


def sum_metrics(text: str) -> dict:
    """Prometheus' text format, each metric summed over its labels."""
    sums: dict = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            key = name.split("{")[0]
            sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def hours_of(start: float, hours: int) -> list[float]:
    return [start + k * HOUR_S for k in range(hours)]


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# -- the proxies ---------------------------------------------------------------------------------


def proxy_command(upstream: str, port: int, capture: Path | None = None, patch: str | None = None) -> list:
    """The proxy's command; ``patch``, Python that changes one thing in the proxy's process and starts it."""
    command = [sys.executable, "-c", patch] if patch else [sys.executable, "-m", "serving"]
    command += ["--upstream", upstream, "--model-uri", "models:/iris@champion", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    if capture is not None:
        spool = capture.with_name(capture.name + "-spool")
        command += ["--capture-uri", str(capture), "--capture-spool", str(spool), "--capture-replica", "bench-1"]
    return command


def proxy_env(env: dict) -> dict:
    """The store's environment, with the repository importable (the row clock lives in ``bench``)."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}


def counters(base: str) -> dict:
    """The proxy's metrics, each summed over its labels."""
    return sum_metrics(requests.get(f"{base}/metrics", timeout=10).text)


# -- 1. throughput, capture off and on -----------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    load: LoadResult
    cpu_us: float  # the proxy process's CPU per request


def throughput(urls: dict, pids: dict, bodies: Path, generator: str, duration: float, rounds: int) -> dict:
    """Each set-up's measurements, in rounds that alternate which goes first."""
    results = {setup: [] for setup in urls}
    for setup in urls:
        run_load(generator, urls[setup], bodies, CONNECTIONS, 2)  # warm-up
    order = list(urls)
    for round_ in range(rounds):
        for setup in order if round_ % 2 == 0 else order[::-1]:
            before = cpu_seconds(pids[setup])
            load = run_load(generator, urls[setup], bodies, CONNECTIONS, duration)
            cpu = (cpu_seconds(pids[setup]) - before) * 1e6 / max(load.requests, 1)
            _logger.info("round %d, capture %s: %.0f req/s, %.0f us CPU/req", round_ + 1, setup, load.throughput, cpu)
            results[setup].append(Measurement(load, cpu))
    return results


def render_throughput(results: dict) -> str:
    """Medians, and the ratios of throughput and of the proxy's CPU per request to "off"."""
    lines = [
        "| capture | req/s | vs off | p50 ms | p99 ms | proxy CPU us/req | vs off | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    off_rate, off_cpu = median_throughput(results["off"]), statistics.median(m.cpu_us for m in results["off"])
    for setup, runs in results.items():
        median = lambda get, runs=runs: statistics.median(get(run) for run in runs)  # noqa: E731
        rate, cpu = median(lambda m: m.load.throughput), median(lambda m: m.cpu_us)
        lines.append(
            f"| {setup} | {rate:.0f} | {rate / off_rate:.2f}x | {median(lambda m: m.load.p50_us) / 1000:.2f} "
            f"| {median(lambda m: m.load.p99_us) / 1000:.2f} | {cpu:.0f} | {cpu / off_cpu:.2f}x "
            f"| {sum(m.load.error_count for m in runs)} |"
        )
    return "\n".join(lines)


def cpu_ratio(results: dict) -> float:
    return statistics.median(m.cpu_us for m in results["on"]) / statistics.median(m.cpu_us for m in results["off"])


def round_ratios(results: dict) -> str:
    """On over off in each round, measured one after the other: how far the machine's noise moves the ratio."""
    return ", ".join(
        f"{on.load.throughput / off.load.throughput:.2f}" for on, off in zip(results["on"], results["off"])
    )


def median_throughput(runs: list) -> float:
    return statistics.median(m.load.throughput for m in runs)


def writer_costs(workdir: Path, calls: int = 20_000) -> dict:
    """What the capture's writer costs a single-row request: the event loop's submit, the writer thread's part.

    Measured twice, the first time only to warm up (pyarrow's first table costs ~0.25 s once).
    """
    writer_cost(workdir, 1_000)
    return writer_cost(workdir, calls)


def writer_cost(workdir: Path, calls: int) -> dict:
    import tempfile as scratch

    from serving.capture.spool import Spool
    from serving.capture.writer import CaptureWriter
    from serving.feedback.answers import AnswerMemory
    from serving.registry.model_facts import standing_in

    answer = {"prediction": "setosa", "prediction_index": 0, "confidence": 0.97}
    costs = {}
    with scratch.TemporaryDirectory(dir=workdir) as directory:
        spool = Spool(directory, "costs", max_bytes=2**40)
        spool.open()
        writer = CaptureWriter(spool, "costs", file_rows=calls + 1, file_seconds=3600, max_buffered_rows=2 * calls)
        started = time.perf_counter()
        for k in range(calls):
            writer.submit_predictions(
                request_id=f"{k:016x}",
                model_name="iris",
                model_version="1",
                names=FEATURES,
                rows=[[5.1, 3.5, 1.4, 0.2]],
                predictions=[answer],
                latency_ms=2.0,
            )
        costs["submit, on the event loop"] = (time.perf_counter() - started) / calls * 1e6
        facts, memory = standing_in(), AnswerMemory(100_000)  # --capture-uri turns POST /feedback on
        started = time.perf_counter()
        for k in range(calls):
            memory.remember(f"{k:016x}", "1", facts.classes.of_answers([answer]), facts, "iris")
        costs["the answer remembered for POST /feedback, on the event loop"] = (
            (time.perf_counter() - started) / calls * 1e6
        )
        started = time.perf_counter()
        writer.start()
        deadline = started + 120
        while writer.queued_rows and time.perf_counter() < deadline:
            time.sleep(0.001)
        added = time.perf_counter()
        costs["writer thread: the row into its open file"] = (added - started) / calls * 1e6
        writer.close(timeout=120)  # the open file becomes a Parquet file in the spool
        spool.close()
        costs["writer thread: the file closed into Parquet, per row"] = (time.perf_counter() - added) / calls * 1e6
    return costs


# -- 2. ten million rows -------------------------------------------------------------------------


def iris_rows() -> list[tuple[list[float], str]]:
    import csv

    with open(REPO / "data" / "iris.csv", newline="") as handle:
        return [([float(r[name]) for name in FEATURES], r["species"]) for r in csv.DictReader(handle)]


def request_rows(rows: list, count: int, rng: random.Random) -> list:
    """``count`` Iris rows drawn at random, each value moved by noise (sd 0.1 cm) and measured to 0.01 cm: traffic
    whose rows are not 150 rows repeated, which Parquet would store in a few bits."""
    drawn = []
    for _ in range(count):
        values, label = rows[rng.randrange(len(rows))]
        drawn.append(([max(0.1, round(v + rng.gauss(0, 0.1), 2)) for v in values], label))
    return drawn


def body(rows: list) -> str:
    return json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [values for values, _ in rows]}})


@dataclass
class Sent:
    answered: int = 0  # rows the proxy answered (proxy_predictions_total)
    loadgen_requests: int = 0
    one_by_one: int = 0  # rows sent in requests one at a time
    labels: int = 0
    errors: int = 0


def send_one(session: requests.Session, base: str, rows: list, labeled: bool) -> None:
    """One request, then (``labeled``) a label for each of its rows through ``POST /feedback``."""
    answer = session.post(
        f"{base}/invocations", data=body(rows), headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT_S
    )
    answer.raise_for_status()
    if labeled:
        request_id = answer.headers["X-Request-Id"]
        labels = [{"request_id": request_id, "row": index, "label": label} for index, (_, label) in enumerate(rows)]
        session.post(f"{base}/feedback", json=labels, timeout=HTTP_TIMEOUT_S).raise_for_status()


def answered_rows(base: str) -> int:
    return round(counters(base).get("proxy_predictions_total", 0))


def fill(
    base: str,
    bodies: Path,
    target: int,
    hours: int,
    request_size: int,
    generator: str,
    connections: int,
    limit_s: float,
) -> tuple[Sent, float]:
    """Have the proxy answer ``target`` rows: closed-loop chunks of ``request_size``-row requests (about two an hour
    of the capture's clock), each followed by ``LABELED_SHARE`` of its rows sent one request at a time and labeled;
    the last rows one request at a time. Stops after ``limit_s`` seconds, whatever was answered."""
    rng = random.Random(25)
    rows = iris_rows()
    sent, session = Sent(), requests.Session()
    chunk = max(request_size, target // (2 * hours))
    started = time.monotonic()
    rate = None  # rows a second the load generator reaches
    sent.answered = answered_rows(base)
    while sent.answered < target and time.monotonic() - started < limit_s:
        left = target - sent.answered
        if rate is not None and left < 2 * rate:  # too few for a run of the load generator
            count = min(request_size, left)
            send_one(session, base, request_rows(rows, count, rng), labeled=False)
            sent.one_by_one += count
            sent.answered += count
            continue
        aim = min(chunk, left / 2)  # never more than half of what is left: the rate swings on a busy machine
        labeled = round(LABELED_SHARE * aim)
        duration = 2.0 if rate is None else min(60.0, max(1.0, (aim - labeled) / rate))
        duration = min(duration, max(1.0, limit_s - (time.monotonic() - started)))
        before = sent.answered
        chunk_started = time.monotonic()
        load = run_load(generator, f"{base}/invocations", bodies, connections, duration, timeout=HTTP_TIMEOUT_S)
        sent.answered = answered_rows(base)
        rate = (sent.answered - before) / max(1e-3, time.monotonic() - chunk_started)
        sent.errors += load.error_count
        sent.loadgen_requests += load.requests
        while labeled > 0 and sent.answered < target:
            count = min(request_size, labeled, target - sent.answered)
            send_one(session, base, request_rows(rows, count, rng), labeled=True)
            sent.one_by_one += count
            sent.labels += count
            sent.answered += count
            labeled -= count
        _logger.info("%d of %d rows answered (%.0f rows/s under load)", sent.answered, target, rate)
    sent.answered = answered_rows(base)
    return sent, time.monotonic() - started


def write_request_bodies(workdir: Path, request_size: int, count: int = 20) -> Path:
    rng = random.Random(10)
    rows = iris_rows()
    path = workdir / f"rows-{request_size}.jsonl"
    path.write_text("".join(body(request_rows(rows, request_size, rng)) + "\n" for _ in range(count)))
    return path


@dataclass(frozen=True)
class Stored:
    files: int
    bytes: int
    rows: int
    hours: int

    @property
    def bytes_per_row(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


def stored(capture: Path, kind: str) -> Stored:
    """What the capture holds of ``kind``: its files, their bytes, their rows (from each file's footer), the hours."""
    import pyarrow.parquet as pq

    files = sorted((capture / kind).rglob("*.parquet"))
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    hours = {path.parent for path in files}
    return Stored(len(files), sum(path.stat().st_size for path in files), rows, len(hours))


def wait_for_spool(base: str, timeout: float = 120.0) -> None:
    """Until the proxy's spool is empty: every closed file is in the store."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counters(base).get("proxy_capture_spool_files", 0) == 0:
            return
        time.sleep(0.5)


# -- 3. monitor ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorRun:
    label: str
    window: list  # the step's window options
    seconds: float
    peak_rss: int  # bytes
    exit_code: int
    rows: int | None
    labeled: int | None
    status: str

    @property
    def ran(self) -> bool:
        return self.exit_code in (0, 1) and self.rows is not None


def run_monitor(label: str, capture: Path, window: list, env: dict, workdir: Path) -> MonitorRun:
    """``python -m steps.monitor`` in a process of its own: its wall time and its peak RSS, from ``os.wait4``."""
    command = [sys.executable, "-m", "steps.monitor", "--predictions", str(capture), "--feedback", str(capture)]
    log = workdir / f"monitor-{len(list(workdir.glob('monitor-*.log')))}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*command, *window], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    killer = threading.Timer(MONITOR_TIMEOUT_S, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    output = log.read_text(errors="replace")
    found = SUMMARY.findall(output)
    drift = next(((s, int(n)) for s, n, labeled in found if not labeled), None)
    labeled = next((int(n) for _, n, is_labeled in found if is_labeled), None)
    status_text = ", ".join(s for s, _, _ in found) or f"failed (exit {proc.returncode}; see {log})"
    _logger.info("monitor over %s: %.1f s, %d MB, %s", label, seconds, usage.ru_maxrss // 1024, status_text)
    return MonitorRun(
        label,
        window,
        seconds,
        usage.ru_maxrss * 1024,
        proc.returncode,
        drift[1] if drift else None,
        labeled,
        status_text,
    )


def render_monitor(runs: list) -> str:
    lines = [
        "| window | options | rows | labeled rows | wall s | peak RSS MB | verdicts |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        options = " ".join(run.window) or "(none)"
        lines.append(
            f"| {run.label} | `{options}` | {run.rows if run.rows is not None else '-':,} "
            f"| {run.labeled if run.labeled is not None else '-':,} | {run.seconds:.1f} "
            f"| {run.peak_rss / 2**20:.0f} | {run.status} |"
        )
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------


@click.command(
    help="Measure the proxy with capture off and on, capture --rows rows through it, and time monitor over the whole "
    "capture and over one hour of it."
)
@click.option("--rows", type=click.IntRange(min=10_000), default=10_000_000, show_default=True, help="Rows to capture.")
@click.option(
    "--hours", type=click.IntRange(min=2), default=10, show_default=True, help="Hours of partitions they span."
)
@click.option(
    "--request-rows",
    type=click.IntRange(min=1, max=10_000),
    default=10_000,
    show_default=True,
    help="Rows per request while capturing (the proxy's limit is 10,000).",
)
@click.option(
    "--capture-connections",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Closed-loop connections while capturing.",
)
@options.duration(help="Seconds per throughput run.")
@options.rounds(5, "Throughput rounds.")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=10),
    default=600.0,
    show_default=True,
    help="Seconds the capture of --rows may take at most; it stops there, whatever was sent.",
)
@options.LOADGEN
@options.workdir("Keep the store, the captures and the logs here (default: a temporary directory).")
def main(rows, hours, request_rows, capture_connections, duration, rounds, time_limit, loadgen, workdir):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    generator = available_generator(loadgen)
    before = load_average()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="capture-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        for name in (*(f"{THROUGHPUT_CAPTURE}-{k}" for k in range(len(SETUPS))), CAPTURE):
            for path in (workdir / name, workdir / f"{name}-spool"):  # a kept --workdir: its store is reused
                shutil.rmtree(path, ignore_errors=True)
        env, upstream, single, probe = stack.enter_context(champion_upstream(workdir))

        # 1. throughput
        urls, pids, bases = {}, {}, {}
        with contextlib.ExitStack() as proxies:
            for number, (setup, patch) in enumerate(SETUPS.items()):
                port = free_port()
                bases[setup] = f"http://127.0.0.1:{port}"
                urls[setup] = f"{bases[setup]}/invocations"
                capture = None if setup == "off" else workdir / f"{THROUGHPUT_CAPTURE}-{number}"
                command = proxy_command(upstream, port, capture, patch)
                proc = proxies.enter_context(
                    server(command, proxy_env(env), workdir, f"proxy-{number}", urls[setup], probe)
                )
                pids[setup] = proc.pid
            results = throughput(urls, pids, single, generator, duration, rounds)
            counters_on = counters(bases["on"])
        captured_on = stored(workdir / f"{THROUGHPUT_CAPTURE}-1", PREDICTIONS)  # SIGTERM closed its open file
        answered_on = round(counters_on.get("proxy_predictions_total", 0))
        ratio = median_throughput(results["on"]) / median_throughput(results["off"])

        # 2. rows
        capture = workdir / CAPTURE
        per_hour = -(-rows // hours)
        start = (time.time() // HOUR_S - hours) * HOUR_S  # the capture's hours end where this hour starts
        clock_env = {**proxy_env(env), START_ENV: str(start), ROWS_PER_HOUR_ENV: str(per_hour)}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = proxy_command(upstream, port, capture, PROXY_WITH_ROW_CLOCK)
        bodies = write_request_bodies(workdir, request_rows)
        with server(command, clock_env, workdir, "proxy-capturing", f"{base}/invocations", probe):
            sent, fill_seconds = fill(
                base, bodies, rows, hours, request_rows, generator, capture_connections, time_limit
            )
            wait_for_spool(base)
            totals = counters(base)
        predictions, feedback = stored(capture, PREDICTIONS), stored(capture, FEEDBACK)

        # 3. monitor
        last = hours_of(start, hours)[-1]
        windows = (
            ("an empty hour", ["--since", iso(start - HOUR_S), "--until", iso(start)]),
            ("the last hour", ["--since", iso(last), "--until", iso(last + HOUR_S)]),
            ("the whole capture", []),
        )
        monitors = [run_monitor(label, capture, window, env, workdir) for label, window in windows]
    after = load_average()
    minutes = (time.monotonic() - started) / 60

    click.echo(
        f"\ncapture benchmark: {os.cpu_count()} CPUs, load generator {generator}, load average before {before}, "
        f"after {after}, {minutes:.1f} minutes in all"
    )
    click.echo(
        f"\n1. the proxy (batching on) with capture off and on (--capture-uri to a local directory), and on with one "
        f"part of it taken out; single-row /invocations, {CONNECTIONS} connections, {rounds} rounds of {duration:g} s "
        "alternating which goes first (medians):\n"
    )
    click.echo(render_throughput(results))
    dropped_on = counters_on.get("proxy_capture_dropped_rows_total", 0)
    click.echo(
        f"\ncapture on / off: {ratio:.3f} of the throughput (round by round: {round_ratios(results)}); the 'on' "
        f"proxy answered {answered_on:,} rows, {captured_on.rows:,} of them stored, {dropped_on:,.0f} dropped"
    )
    click.echo("\nthe capture's CPU per single-row request, in process (us):")
    for name, micros in writer_costs(workdir).items():
        click.echo(f"  {name}: {micros:.1f}")
    click.echo(
        f"\n2. {sent.answered:,} rows answered by a capturing proxy (--capture-uri to a local directory) in "
        f"{fill_seconds:.0f} s ({sent.answered / fill_seconds:,.0f} rows/s): {sent.loadgen_requests:,} requests of "
        f"{request_rows:,} rows from {capture_connections} closed-loop connections ({generator}), and "
        f"{sent.one_by_one:,} rows in requests sent one at a time, {sent.labels:,} of them then labeled through "
        f"POST /feedback; {sent.errors} failed requests. The capture's clock counted an hour every {per_hour:,} "
        f"rows (bench.capture_clock; everything else is the proxy's own), so the rows span {hours} hours from "
        f"{iso(start)}"
    )
    dropped = totals.get("proxy_capture_dropped_rows_total", 0)
    click.echo(
        f"   stored: {predictions.rows:,} prediction rows in {predictions.files} Parquet files over "
        f"{predictions.hours} hours, {predictions.bytes / 2**20:,.1f} MiB: {predictions.bytes_per_row:.1f} bytes "
        f"per row; {feedback.rows:,} labels in {feedback.files} files, {feedback.bytes_per_row:.1f} bytes per label; "
        f"{dropped:,.0f} rows dropped by the capture"
    )
    click.echo(
        f"\n3. python -m steps.monitor --predictions {capture.name} --feedback {capture.name} [window], each in its "
        "own process (peak RSS from os.wait4):\n"
    )
    click.echo(render_monitor(monitors))
    base_run, window_run, whole_run = monitors
    checks = [
        Goal(
            f"{CONNECTIONS} conns: throughput with capture on within 5% of off",
            within(median_throughput(results["on"]), median_throughput(results["off"])),
            f"{ratio:.3f} ({median_throughput(results['on']):.0f} vs {median_throughput(results['off']):.0f} req/s; "
            f"the proxy's CPU per request {cpu_ratio(results):.2f}x)",
        ),
        Goal(
            f"every answered row captured ({rows:,} asked)",
            predictions.rows == sent.answered and sent.answered >= rows and not dropped,
            f"{predictions.rows:,} stored of {sent.answered:,} answered, {dropped:,.0f} dropped",
        ),
    ]
    if all(run.ran for run in monitors) and whole_run.rows:
        share = window_run.rows / whole_run.rows
        bounded = memory_bounded_by_window(base_run.peak_rss, window_run.peak_rss, whole_run.peak_rss, share)
        mb = lambda run: run.peak_rss / 2**20  # noqa: E731
        checks.append(
            Goal(
                "monitor's memory bounded by the window, not the capture: (window - empty) <= 2 x share x "
                "(whole - empty)",
                bounded,
                f"one hour {mb(window_run):.0f} MB, whole {mb(whole_run):.0f} MB, empty {mb(base_run):.0f} MB, "
                f"share {share:.3f}: {mb(window_run) - mb(base_run):.0f} <= "
                f"{2 * share * (mb(whole_run) - mb(base_run)):.0f} MB",
            )
        )
    else:
        checks.append(Goal("monitor's memory bounded by the window, not the capture", False, "a monitor run failed"))
    click.echo("\n" + report(checks))


if __name__ == "__main__":
    main()
