"""Closed-loop HTTP and gRPC load for the serving benchmark: `wrk` when installed, else an asyncio fallback.

Closed loop: each of N connections sends its next request as soon as the previous answer
arrives, for a fixed time, so throughput and latency are those of the server under a
fixed concurrency. `wrk` is written in C and needs a fraction of a core; the Python
fallback needs far more CPU on a 2-core machine, which lowers every figure, so results
say which generator made them. Bodies are JSON documents, one per line of a file, sent
round-robin. Both generators report the same JSON shape (see ``LoadResult``).

A ``grpc://host:port/<package.Service>/<Method>`` URL drives a unary gRPC method instead,
with the Python generator only (``grpc.aio``, one channel); its bodies are serialized
request messages, one per line, base64-encoded. Comparing gRPC with REST, drive both with
the Python generator: the same client overhead on both sides.
"""

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click

WRK_SCRIPT = Path(__file__).with_name("closed_loop.lua")
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")


@dataclass(frozen=True)
class LoadResult:
    """What one closed-loop run measured; latencies in microseconds, errors by kind."""

    requests: int
    duration_us: int
    p50_us: int
    p99_us: int
    max_us: int
    errors: dict

    @property
    def throughput(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @classmethod
    def from_json(cls, line: str) -> "LoadResult":
        data = json.loads(line)
        return cls(**{**data, "errors": {kind: int(data["errors"].get(kind, 0)) for kind in ERROR_KINDS}})


def available_generator(requested: str) -> str:
    """``wrk`` or ``python``; ``auto`` picks wrk when it is on PATH."""
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if requested == "wrk" and not shutil.which("wrk"):
        raise click.UsageError("wrk is not installed (Debian: apt-get install -y wrk); use --loadgen python")
    return requested


def run_load(
    generator: str, url: str, bodies: Path, connections: int, duration: float, timeout: float = 30.0
) -> LoadResult:
    """Drive ``url`` (scheme://host:port/path) with ``connections`` closed loops for ``duration`` seconds."""
    base, _, path = url.partition("://")[2].partition("/")
    if generator == "wrk" and url.startswith("grpc://"):
        raise click.UsageError("wrk speaks HTTP only; drive a grpc:// URL with --loadgen python")
    if generator == "wrk":
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={round(timeout)}s",
            "-s",
            str(WRK_SCRIPT),
            f"http://{base}",
            "--",
            str(bodies),
            f"/{path}",
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--bodies",
            str(bodies),
            "--connections",
            str(connections),
            "--duration",
            str(duration),
            "--timeout",
            str(timeout),
        ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + timeout + 60, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{generator} failed (exit {completed.returncode}): {completed.stderr.strip()[-500:]}")
    return LoadResult.from_json(lines[-1])


async def closed_loop(url: str, bodies: list[bytes], connections: int, duration: float, timeout: float) -> LoadResult:
    """The fallback generator: one aiohttp session, ``connections`` concurrent request loops."""
    import aiohttp

    errors: Counter = Counter()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    started = time.perf_counter()

    async def send(body: bytes) -> None:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status >= 400:
                    errors["status"] += 1
        except TimeoutError:
            errors["timeout"] += 1
        except aiohttp.ClientConnectorError:
            errors["connect"] += 1
            await asyncio.sleep(0.01)
        except (aiohttp.ClientError, OSError):
            errors["read"] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        latencies = await _loops(send, bodies, connections, started + duration)
    elapsed = time.perf_counter() - started
    return _result(latencies, errors, elapsed)


async def grpc_closed_loop(
    url: str, bodies: list[bytes], connections: int, duration: float, timeout: float
) -> LoadResult:
    """``connections`` concurrent loops calling one unary method with serialized requests, over one channel."""
    import grpc

    address, _, method = url.partition("://")[2].partition("/")
    errors: Counter = Counter()
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{method}")  # bytes in, bytes out: no (de)serialization in the client

        async def send(body: bytes) -> None:
            try:
                await call(body, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                errors["timeout" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "status"] += 1

        latencies = await _loops(send, bodies, connections, started + duration)
    elapsed = time.perf_counter() - started
    return _result(latencies, errors, elapsed)


async def _loops(send, bodies: list[bytes], connections: int, deadline: float) -> list[float]:
    """``connections`` closed loops, each sending the bodies in turn (from its own offset) until ``deadline``;
    the latency of every call, whatever ``send`` made of its answer."""
    latencies: list[float] = []

    async def loop(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            body = bodies[index % len(bodies)]
            index += 1
            sent = time.perf_counter()
            await send(body)
            latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(loop(k) for k in range(connections)))
    return latencies


def _result(latencies: list[float], errors: Counter, elapsed: float) -> LoadResult:
    ordered = sorted(latencies) or [0.0]

    def percentile(p: float) -> int:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6)

    return LoadResult(
        requests=len(latencies),
        duration_us=round(elapsed * 1e6),
        p50_us=percentile(50),
        p99_us=percentile(99),
        max_us=round(ordered[-1] * 1e6),
        errors={kind: errors[kind] for kind in ERROR_KINDS},
    )


@click.command(help="Closed-loop POST load on one URL; prints one JSON line of results (the wrk fallback).")
@click.option("--url", required=True)
@click.option(
    "--bodies",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="One JSON body per line.",
)
@click.option("--connections", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds per request.")
def main(url, bodies, connections, duration, timeout):
    lines = [line for line in bodies.read_text().splitlines() if line.strip()]
    if not lines:
        raise click.UsageError(f"{bodies} holds no bodies")
    grpc_url = url.startswith("grpc://")
    payloads = [base64.b64decode(line) if grpc_url else line.encode() for line in lines]
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    loop = grpc_closed_loop if grpc_url else closed_loop
    result = run(loop(url, payloads, connections, duration, timeout))
    click.echo(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
