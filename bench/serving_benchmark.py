"""Side-by-side serving benchmark: bare `mlflow models serve`, the proxy without and with batching,
the same batching proxy driven with the Open Inference Protocol's infer (V2) over REST and over
gRPC, the batching proxy with its request checks as they were before table contracts
(``bench.hardcoded_iris``), and the in-process design at its fastest (``bench.reference_app``:
aiohttp, NumPy), all serving the same champion on loopback; and the batching proxy in
front of a 30-feature model (a plain scikit-learn model registered beside it), for what the
contract's checks cost on a wider table.

It trains a champion with the real pipeline (`mlflow run`) in a temporary store, then
starts one configuration at a time (so they never compete for the CPU), drives it with
the same closed-loop generator at each concurrency for a fixed time with single-row
requests, and prints one table with each figure's ratio to bare `mlflow models serve`
at the same concurrency, followed by the goals of the batching issue. Then it measures
the memory of a following proxy's whole process tree, role by role (``bench.stack_memory``),
over an http tracking server and over the sqlite store. It measures and prints; it asserts
nothing.

Bare `mlflow models serve` runs as MLflow ships it. The proxy's upstreams run with the
environment the proxy gives an `mlflow models serve` it starts itself
(``serving.upstreams.servers.upstream_env``); the row "mlflow models serve, proxy's env" shows what
that environment alone is worth, so the table separates it from batching. Run from the
repository root:

    python -m bench.serving_benchmark [--duration 10] [--connections 1,8,64] [--only memory]
"""

import contextlib
import csv
import functools
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import requests

from bench import options
from bench.goals import Goal, report
from bench.loadgen import LoadResult, available_generator, run_load
from bench.stack_memory import STORES, StackMemory, measure_store
from bench.stack_memory import render as render_memory
from bench.store import REPO, store_env, train
from iris_core.processes import free_port, start_logged, stop_process, wait_until
from iris_core.table.iris import IRIS

_logger = logging.getLogger(__name__)

CHAMPION_URI = "models:/iris@champion"
WIDE_URI = "models:/wide@champion"  # scikit-learn's breast cancer table: 30 features
FEATURES = IRIS.feature_names
START_TIMEOUT = 240.0
PAGE = os.sysconf("SC_PAGE_SIZE")


V2_INFER = "/v2/models/iris/infer"
GRPC_INFER = "grpc"  # the proxy's --grpc-port, method inference.GRPCInferenceService/ModelInfer
GRPC_METHOD = "inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Config:
    """One server set-up under test: its key for ``--only``, its label in the table, the path it is driven on.

    ``server`` names the set-up whose processes it drives (its own key by default): the
    V2 row drives the very proxy of the "batching" row, so the two compare protocols alone.
    """

    key: str
    label: str
    path: str
    server: str = ""
    body: str = ""  # which bodies drive it (``write_bodies``); its path's by default
    generator: str = ""  # the load generator it needs ("python" for gRPC, and REST beside it); the run's by default

    @property
    def server_key(self) -> str:
        return self.server or self.key

    @property
    def bodies(self) -> str:
        return self.body or self.path


CONFIGS = (
    Config("bare", "mlflow models serve", "/invocations"),
    Config("bare-env", "mlflow models serve, proxy's env", "/invocations"),
    Config("proxy", "proxy, batching off", "/invocations"),
    Config("batching", "proxy, batching on", "/invocations"),
    Config("hardcoded", "proxy, batching on, pre-contract Iris checks", "/invocations"),
    Config("v2", "proxy, batching on, V2 infer", V2_INFER, server="batching"),
    Config(
        "v2-python", "proxy, batching on, V2 infer (Python client)", V2_INFER, server="batching", generator="python"
    ),
    Config("grpc", "proxy, batching on, V2 gRPC (Python client)", GRPC_INFER, server="batching", generator="python"),
    Config("wide", "proxy, batching on, 30 features", "/invocations", body="wide"),
    Config("reference", "in-process reference (aiohttp, NumPy)", "/predict"),
)


@dataclass
class Row:
    config: Config
    connections: int
    load: LoadResult
    rss: dict  # role -> peak bytes of that process tree during the run
    proxy_cpu_us: float | None = None  # the proxy process's CPU per request (its threads included)


def build_champion(workdir: Path, versions: int = 1, wide: bool = False) -> dict:
    """Run the real pipeline into a store in ``workdir`` until ``iris`` has ``versions``; the environment for it.

    With ``wide``, the store also gets the plain models of ``PLAIN_MODELS`` (``wide``: 30
    features; ``wine``: 13), logged the ordinary MLflow way.
    """
    env = store_env(workdir)
    have = registered_versions(env) if (workdir / "mlflow.db").exists() else 0
    if have:
        _logger.info("reusing the store in %s (%d versions)", workdir, have)
    for extra in range(have, versions):
        train(workdir, env, "-P", f"C={1.0 - 0.5 * extra}")
    for name in PLAIN_MODELS if wide else ():
        if registered_versions(env, name) == 0:
            register_plain(env, name)
    return env


PLAIN_MODELS = {"wide": "load_breast_cancer", "wine": "load_wine"}  # registered name -> scikit-learn's table


def register_plain(env: dict, name: str) -> None:
    """One of scikit-learn's tables, scaled and fitted, logged with an inferred signature as ``name`` @champion."""
    import mlflow
    import sklearn.datasets
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = getattr(sklearn.datasets, PLAIN_MODELS[name])(as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data.data, data.target)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("plain-models")
    with mlflow.start_run():
        signature = infer_signature(data.data, model.predict(data.data))
        mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=data.data.head(2), registered_model_name=name
        )
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", "1")
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def registered_versions(env: dict, name: str = "iris") -> int:
    from mlflow import MlflowClient

    uri = env["MLFLOW_TRACKING_URI"]
    return len(MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = '{name}'"))


def write_bodies(workdir: Path) -> dict:
    """One single-row body per Iris row: the MLflow protocol for /invocations, the classic object for /predict,
    four one-row tensors for the V2 infer."""
    import json

    with open(REPO / "data" / "iris.csv", newline="") as handle:
        rows = [[float(record[name]) for name in FEATURES] for record in csv.DictReader(handle)]
    invocations = workdir / "invocations.jsonl"
    invocations.write_text(
        "".join(json.dumps({"dataframe_split": {"columns": list(FEATURES), "data": [row]}}) + "\n" for row in rows)
    )
    predict = workdir / "predict.jsonl"
    predict.write_text("".join(json.dumps(dict(zip(FEATURES, row))) + "\n" for row in rows))
    v2 = workdir / "v2-infer.jsonl"
    v2.write_text(
        "".join(
            json.dumps(
                {
                    "inputs": [
                        {"name": n, "shape": [1, 1], "datatype": "FP64", "data": [v]} for n, v in zip(FEATURES, row)
                    ]
                }
            )
            + "\n"
            for row in rows
        )
    )
    import sklearn.datasets

    tables = {}
    for name, loader in PLAIN_MODELS.items():
        frame = getattr(sklearn.datasets, loader)(as_frame=True).data
        tables[name] = workdir / f"{name}-invocations.jsonl"
        tables[name].write_text(
            "".join(
                json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": [row]}}) + "\n"
                for row in frame.to_numpy().tolist()
            )
        )
    grpc = workdir / "grpc-infer.b64"
    grpc.write_text("".join(grpc_body(row) + "\n" for row in rows))
    return {"/invocations": invocations, "/predict": predict, V2_INFER: v2, GRPC_INFER: grpc, **tables}


def grpc_body(row: list[float]) -> str:
    """One ModelInferRequest of a row, four FP64 tensors in raw contents as Triton's client sends them, in base64."""
    import base64
    import struct

    from serving.protocols.grpc import messages

    request = messages.ModelInferRequest(model_name="iris")
    for name, value in zip(FEATURES, row):
        request.inputs.add(name=name, datatype="FP64", shape=[1, 1])
        request.raw_input_contents.append(struct.pack("<d", value))
    return base64.b64encode(request.SerializeToString()).decode()


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, read from /proc."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE
    return total


def tree_pids(root: int) -> set[int]:
    """``root`` and all its descendants, read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in members]
        members.update(children)
        frontier.extend(children)
    return members


class PeakRss:
    """Samples the RSS of some process trees in a thread while a load runs; keeps each peak."""

    def __init__(self, roots: dict, interval: float = 0.25):
        self.roots, self.interval = roots, interval
        self.peaks = {role: 0 for role in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for role, pid in self.roots.items():
                self.peaks[role] = max(self.peaks[role], tree_rss(pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def server(command: list, env: dict, workdir: Path, name: str, probe_url: str, probe_body: bytes):
    """Start ``command`` in its own session; yields the process once ``probe_body`` gets a 200."""
    log = workdir / f"{name}.log"
    proc = start_logged(command, log, cwd=workdir, env=env)

    def answers_or_exited() -> bool:
        if proc.poll() is not None:  # wait_until takes an exception for "not yet": say it with True
            return True
        response = requests.post(probe_url, data=probe_body, headers={"Content-Type": "application/json"}, timeout=10)
        return response.status_code == 200

    try:
        try:
            what = f"{name} answering {probe_url} (log: {log})"
            wait_until(answers_or_exited, timeout=START_TIMEOUT, interval=0.5, what=what)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from None
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(nothing)"]
            raise click.ClickException(f"{name} exited with {proc.returncode}: {tail[0][:300]} (log: {log})")
        yield proc
    finally:
        stop_process(proc)


def mlflow_serve(port: int, model_uri: str = CHAMPION_URI) -> list:
    from serving.upstreams.servers import serve_command

    return serve_command(model_uri, port)


def upstream_env(env: dict) -> dict:
    """``env`` with what the proxy sets when it starts `mlflow models serve` itself."""
    from serving.upstreams.servers import upstream_env as proxy_upstream_env

    proxy_env = proxy_upstream_env()
    return {**env, **{name: value for name, value in proxy_env.items() if os.environ.get(name) != value}}


@contextlib.contextmanager
def champion_upstream(workdir: Path):
    """The champion behind a bare `mlflow models serve`, for benchmarks that put proxies in front of it.

    Yields (the store's environment, the upstream's base URL, the single-row request bodies, one body
    as the probe).
    """
    env = build_champion(workdir)
    bodies = write_bodies(workdir)["/invocations"]
    probe = bodies.read_text().splitlines()[0].encode()
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    with server(mlflow_serve(port), upstream_env(env), workdir, "upstream", f"{upstream}/invocations", probe):
        yield env, upstream, bodies, probe


@contextlib.contextmanager
def started(config: Config, env: dict, workdir: Path, probe_body: bytes):
    """The processes of one configuration; yields (base URL, {role: pid})."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    probe = f"{base}{config.path}"
    key = config.server_key
    if key in ("bare", "bare-env"):
        serve_env = env if key == "bare" else upstream_env(env)
        with server(mlflow_serve(port), serve_env, workdir, key, probe, probe_body) as proc:
            yield base, {"server": proc.pid}
    elif key == "reference":
        command = [sys.executable, "-m", "bench.reference_app", "--model-uri", CHAMPION_URI, "--port", str(port)]
        # bench is not an installed package and the app runs in the store's directory
        app_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
        with server(command, app_env, workdir, "reference", probe, probe_body) as proc:
            yield base, {"server": proc.pid}
    else:
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        upstream_log = f"{key}-upstream"
        model_uri = WIDE_URI if key == "wide" else CHAMPION_URI
        with server(
            mlflow_serve(upstream_port, model_uri),
            upstream_env(env),
            workdir,
            upstream_log,
            f"{upstream}/invocations",
            probe_body,
        ) as up:
            module = "bench.hardcoded_iris" if key == "hardcoded" else "serving"
            command = [sys.executable, "-m", module, "--upstream", upstream, "--host", "127.0.0.1", "--port", str(port)]
            if key == "proxy":
                command.append("--no-batching")
            if key == "batching":
                command += ["--grpc-port", str(port + 1 if port < 65535 else port - 1)]
            if key == "wide":
                command += ["--model-uri", model_uri]  # its contract comes from the registry
            proxy_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
            with server(command, proxy_env, workdir, key, probe, probe_body) as proxy:
                yield base, {"proxy": proxy.pid, "upstream": up.pid}


def measure(configs, connections, duration, warmup, generator, workdir, env) -> list:
    """Start every server first, then measure them in turn at each concurrency.

    Interleaving keeps the measurements that a ratio compares close together in time, so a
    change in whatever else runs on the machine moves both sides alike.
    """
    bodies = write_bodies(workdir)
    rows = []
    with contextlib.ExitStack() as stack:
        running, servers = [], {}
        for config in configs:
            if config.server_key not in servers:
                first = next(c for c in CONFIGS if c.key == config.server_key)
                probe_body = bodies[first.bodies].read_text().splitlines()[0].encode()
                _logger.info("starting %s", first.label)
                servers[config.server_key] = stack.enter_context(started(first, env, workdir, probe_body))
            base, roots = servers[config.server_key]
            url = f"{base}{config.path}"
            if config.path == GRPC_INFER:  # the batching proxy listens for gRPC on the port after its own
                host, port = base.rpartition(":")[0].removeprefix("http://"), int(base.rpartition(":")[2])
                url = f"grpc://{host}:{port + 1 if port < 65535 else port - 1}/{GRPC_METHOD}"
            config_generator = config.generator or generator
            if warmup:
                run_load(config_generator, url, bodies[config.bodies], max(connections), warmup)
            running.append((config, url, roots))
        for count in connections:
            for config, url, roots in running:
                cpu_before = cpu_seconds(roots["proxy"]) if "proxy" in roots else None
                with PeakRss(roots) as rss:
                    load = run_load(config.generator or generator, url, bodies[config.bodies], count, duration)
                cpu = None
                if cpu_before is not None:
                    cpu = (cpu_seconds(roots["proxy"]) - cpu_before) * 1e6 / max(load.requests, 1)
                _logger.info(
                    "%s, %d connections: %.0f req/s, %d errors", config.label, count, load.throughput, load.error_count
                )
                rows.append(Row(config, count, load, rss.peaks, cpu))
    return sorted(rows, key=lambda row: (configs.index(row.config), row.connections))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far, from /proc (its threads included).

    Unlike throughput, a process's CPU time per request hardly moves when other work
    shares the machine, so it is the figure to trust on a busy one.
    """
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def render_table(rows: list) -> str:
    """One markdown table; ratios are to bare `mlflow models serve` at the same concurrency."""
    bare = {row.connections: row for row in rows if row.config.key == "bare"}
    header = (
        "| server | conns | req/s | vs bare | p50 ms | vs bare | p99 ms | vs bare | errors | proxy CPU us/req "
        "| peak RSS MB | vs bare |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        ref = bare.get(row.connections)
        load = row.load
        total_rss = sum(row.rss.values())
        rss_text = (
            " + ".join(f"{role} {value / 2**20:.0f}" for role, value in row.rss.items())
            if len(row.rss) > 1
            else f"{total_rss / 2**20:.0f}"
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    row.config.label,
                    str(row.connections),
                    f"{load.throughput:.0f}",
                    ratio(load.throughput, ref and ref.load.throughput),
                    f"{load.p50_us / 1000:.1f}",
                    ratio(load.p50_us, ref and ref.load.p50_us),
                    f"{load.p99_us / 1000:.1f}",
                    ratio(load.p99_us, ref and ref.load.p99_us),
                    str(load.error_count),
                    f"{row.proxy_cpu_us:.0f}" if row.proxy_cpu_us is not None else "-",
                    rss_text,
                    ratio(total_rss, ref and sum(ref.rss.values())),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def goals(rows: list, memory: list[StackMemory]) -> list[Goal]:
    """The performance issue's goals (the proxy is the batching one), where the run has the figures for them."""
    index = {(row.config.key, row.connections): row for row in rows}
    checks = []
    bare64, batch64, fast64 = index.get(("bare", 64)), index.get(("batching", 64)), index.get(("reference", 64))
    if batch64 and batch64.proxy_cpu_us is not None:
        cpu = batch64.proxy_cpu_us
        checks.append(Goal("64 conns: proxy CPU per request <= 100 us", cpu <= 100, f"{cpu:.0f} us"))
    if bare64 and batch64:
        times = batch64.load.throughput / bare64.load.throughput
        checks.append(Goal("64 conns: proxy throughput >= 30x bare", times >= 30, f"{times:.1f}x"))
        p99 = batch64.load.p99_us / bare64.load.p99_us
        checks.append(Goal("64 conns: proxy p99 <= 0.05x bare", p99 <= 0.05, f"{p99:.3f}x"))
    if fast64 and batch64:
        times = batch64.load.throughput / fast64.load.throughput
        checks.append(Goal("64 conns: proxy throughput >= 5x the in-process reference", times >= 5, f"{times:.1f}x"))
    hard64 = index.get(("hardcoded", 64))
    if hard64 and batch64:
        share = batch64.load.throughput / hard64.load.throughput
        cpu = (
            f", proxy CPU {batch64.proxy_cpu_us:.0f} vs {hard64.proxy_cpu_us:.0f} us/req" if hard64.proxy_cpu_us else ""
        )
        checks.append(
            Goal(
                "64 conns: contract checks' throughput within 10% of the pre-contract Iris checks",
                share >= 0.9,
                f"{share:.2f}{cpu}",
            )
        )
    for count in (1, 64):
        rest, grpc = index.get(("v2-python", count)), index.get(("grpc", count))
        if rest and grpc:
            share = grpc.load.throughput / rest.load.throughput
            checks.append(
                Goal(
                    f"{count} conn{'s' if count > 1 else ''}: V2 gRPC throughput >= V2 REST's (same Python client)",
                    share >= 1.0,
                    f"{share:.2f}x ({grpc.load.throughput:.0f} vs {rest.load.throughput:.0f} req/s)",
                )
            )
    v2_64 = index.get(("v2", 64))
    if v2_64 and batch64:
        share = v2_64.load.throughput / batch64.load.throughput
        checks.append(
            Goal(
                "64 conns: V2 infer throughput within 10% of /invocations on the same proxy",
                share >= 0.9,
                f"{share:.2f}",
            )
        )
    bare1, batch1 = index.get(("bare", 1)), index.get(("batching", 1))
    if bare1 and batch1:
        p50 = batch1.load.p50_us / bare1.load.p50_us
        checks.append(Goal("1 conn: proxy p50 <= 1.05x bare", p50 <= 1.05, f"{p50:.2f}x"))
    loads = [row.load for row in rows] + [result.load for result in memory if result.load is not None]
    checks.append(Goal("0 errors everywhere", all(load.error_count == 0 for load in loads)))
    proxy_rss = [row.rss["proxy"] for row in rows if "proxy" in row.rss]
    if proxy_rss:
        checks.append(Goal("proxy RSS <= 150 MB", max(proxy_rss) <= 150 * 2**20))
    for result in memory:
        if result.store == "http":
            checks.append(
                Goal(
                    "http store: no process of the proxy's tree imports MLflow but the model servers",
                    not result.mlflow_outside_model_servers,
                )
            )
    return checks


def validation_cost(repeats: int = 5, number: int = 20_000) -> dict[str, float]:
    """Microseconds to check one single-row request: the contract's compiled checks against the pre-contract ones."""
    import json
    import timeit

    from bench.hardcoded_iris import frozen
    from iris_core.table.contract import Feature, TableContract
    from serving.protocols.rows import Limits, RowReader
    from serving.protocols.scoring import parse_invocation

    wide = TableContract(tuple(Feature(f"feature {i}") for i in range(30)))
    cases = {
        "Iris, the contract's checks": (RowReader(IRIS), [5.1, 3.5, 1.4, 0.2]),
        "Iris, pre-contract checks": (frozen(RowReader(IRIS)), [5.1, 3.5, 1.4, 0.2]),
        "30 features, the contract's checks": (RowReader(wide), [1.5] * 30),
    }
    figures = {}
    for label, (reader, row) in cases.items():
        body = json.dumps({"dataframe_split": {"columns": list(reader.names), "data": [row]}}).encode()
        check = functools.partial(parse_invocation, "application/json", body, Limits(), reader)
        figures[label] = min(timeit.repeat(check, repeat=repeats, number=number)) / number * 1e6
    return figures


def render_validation(figures: dict[str, float]) -> str:
    reference = figures["Iris, pre-contract checks"]
    lines = ["| checks | us per request | vs pre-contract |", "|---|---|---|"]
    lines += [f"| {label} | {us:.2f} | {us / reference:.2f}x |" for label, us in figures.items()]
    return "\n".join(lines)


@dataclass
class ModelsRow:
    """One proxy serving ``names`` (managed model servers), at idle and under load on every model at once."""

    names: tuple[str, ...]
    idle_rss: int
    load_rss: int
    loads: dict  # model -> LoadResult


def measure_models(env: dict, workdir: Path, generator: str, duration: float, connections: int = 64) -> list:
    """The proxy serving 1, 2 and 3 models (its own model servers): the process tree's RSS at idle, and under
    ``connections`` closed loops shared out over the models' routes, with each model's throughput."""
    bodies = write_bodies(workdir)
    rows = []
    for names in (("iris",), ("iris", "wide"), ("iris", "wide", "wine")):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)]
        for name in names:
            command += ["--model-uri", f"models:/{name}@champion"]
        probe_body = bodies["/invocations"].read_text().splitlines()[0].encode()
        key = f"models-{len(names)}"
        with server(command, env, workdir, key, f"{base}/invocations", probe_body) as proxy:
            wait_until(functools.partial(is_ready, base), START_TIMEOUT, what=key)
            time.sleep(2)  # settle after the readiness checks
            idle = tree_rss(proxy.pid)
            with PeakRss({"tree": proxy.pid}) as rss:
                loads = drive_models(base, names, bodies, generator, max(1, connections // len(names)), duration)
            rows.append(ModelsRow(names, idle, rss.peaks["tree"], loads))
            _logger.info(
                "%d models: idle %d MB, under load %d MB", len(names), idle // 2**20, rss.peaks["tree"] // 2**20
            )
    return rows


def is_ready(base: str) -> bool:
    return requests.get(f"{base}/ready", timeout=5).status_code == 200


def drive_models(base: str, names: tuple, bodies: dict, generator: str, connections: int, duration: float) -> dict:
    """Every model's route driven at once, ``connections`` closed loops each; each model's result."""
    from concurrent.futures import ThreadPoolExecutor

    def drive(name: str):
        return run_load(
            generator,
            f"{base}/models/{name}/invocations",
            bodies["/invocations" if name == "iris" else name],
            connections,
            duration,
        )

    with ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, pool.map(drive, names)))


def render_models(rows: list) -> str:
    lines = [
        "| models | idle tree RSS MB | under load, peak MB | req/s, all models | req/s by model | errors |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        total = sum(load.throughput for load in row.loads.values())
        by_model = ", ".join(f"{name} {load.throughput:.0f}" for name, load in row.loads.items())
        errors = sum(load.error_count for load in row.loads.values())
        lines.append(
            f"| {len(row.names)} | {row.idle_rss / 2**20:.0f} | {row.load_rss / 2**20:.0f} | {total:.0f} | "
            f"{by_model} | {errors} |"
        )
    return "\n".join(lines)


def load_average() -> str:
    """The 1-minute load average: other work on the machine lowers every figure."""
    return f"{os.getloadavg()[0]:.2f}"


@click.command(
    help="Benchmark bare `mlflow models serve`, the proxy (batching off/on, V2 infer over REST and gRPC, several "
    "models) and the in-process reference."
)
@options.duration()
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds of load before measuring each server.",
)
@options.connections("1,8,64")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice([c.key for c in CONFIGS] + ["memory", "models"]),
    help="Measure only these servers, or the stack's memory, or one proxy serving 1, 2 and 3 models (repeatable).",
)
@click.option(
    "--memory-duration",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Seconds of load while the stack's memory is sampled.",
)
@options.LOADGEN
@options.workdir(
    "Keep the store and server logs here; a store already there is reused (default: a temporary directory)."
)
def main(duration, warmup, connections, only, memory_duration, loadgen, workdir):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    generator = available_generator(loadgen)
    before = load_average()
    configs = [c for c in CONFIGS if not only or c.key in only]
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serving-bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        with_memory = not only or "memory" in only
        with_models = not only or "models" in only
        plain = with_models or any(c.key == "wide" for c in configs)
        env = build_champion(workdir, versions=2 if with_memory else 1, wide=plain)
        rows = measure(configs, connections, duration, warmup, generator, workdir, env)
        models = measure_models(env, workdir, generator, memory_duration) if with_models else []
        bodies = write_bodies(workdir)["/invocations"]
        memory = [
            measure_store(store, env, workdir, bodies, generator, memory_duration) for store in STORES if with_memory
        ]
    click.echo(
        f"\nsingle-row requests, {duration:g} s per cell, load generator {generator}, {os.cpu_count()} CPUs, "
        f"load average before {before}, after {load_average()}"
    )
    if rows:
        click.echo("\n" + render_table(rows))
    click.echo("\nthe request checks alone, in process (one single-row dataframe_split body, best of 5):\n")
    click.echo(render_validation(validation_cost()))
    if memory:
        click.echo(
            "\nthe following proxy's process tree, resident MB by role (a model server counts its whole "
            "`mlflow models serve` tree):\n"
        )
        click.echo(render_memory(memory))
    if models:
        click.echo(
            "\none proxy serving 1, 2 and 3 models, each with its own model server; "
            f"{64} connections shared out over the models' routes:\n"
        )
        click.echo(render_models(models))
        one, two = models[0], models[1] if len(models) > 1 else None
        if two is not None:
            ratio_two = sum(load.throughput for load in two.loads.values()) / one.loads["iris"].throughput
            click.echo(f"\ntwo models at once against one: {ratio_two:.2f}x the requests answered")
    checks = goals(rows, memory)
    if checks:
        click.echo("\n" + report(checks, "goals (proxy = proxy, batching on)"))


if __name__ == "__main__":
    main()
