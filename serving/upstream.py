"""The scoring servers behind the proxy: one someone else runs, or one ``mlflow models serve`` we run.

A managed upstream serves one fixed version (``models:/<name>/<N>``), never an alias:
MLflow resolves an alias only at start, so the version a process serves is known for
its whole life and the proxy can say which version answered. It listens on a free
loopback port in its own session, so stopping it stops the uvicorn it launches too.
"""

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path

import aiohttp

from iris_core.processes import free_port
from iris_core.schema import CANARY_CLASS, CANARY_ROW
from serving.errors import ServingError
from serving.forwarding import UpstreamError, post_rows, unavailable

_logger = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
_PING_TIMEOUT = aiohttp.ClientTimeout(total=2)


class UpstreamStartError(ServingError):
    """A model server did not come up: it exited, never answered, or failed the canary."""


class UpstreamState(StrEnum):
    STARTING = "starting"
    READY = "ready"  # takes requests
    DOWN = "down"  # died, or (external) does not answer /ping
    FAILED = "failed"  # did not start
    STOPPED = "stopped"
    UNKNOWN = "unknown"  # external, not asked yet


class Upstream:
    """A scoring server the proxy can send rows to, serving one model version."""

    kind = "external"
    managed = False  # started, restarted and stopped by the router

    def __init__(self, version: str, run_id: str | None = None):
        self.version = version
        self.run_id = run_id
        self.base_url: str | None = None
        self.invocations_url: str | None = None  # set only while it takes requests
        self.state = UpstreamState.STARTING
        self.inflight = 0
        self.last_error: str | None = None

    def _serve_at(self, base_url: str | None) -> None:
        self.base_url = base_url
        self.invocations_url = f"{base_url}/invocations" if base_url else None

    async def score(self, session: aiohttp.ClientSession, rows: list[list[float]], timeout: float) -> list[dict]:
        """One ``/invocations`` call; ``inflight`` counts calls so that a retiring upstream is drained first."""
        url = self.invocations_url
        if url is None:
            raise unavailable()
        self.inflight += 1
        try:
            return await post_rows(session, url, rows, timeout)
        finally:
            self.inflight -= 1

    async def is_up(self, session: aiohttp.ClientSession) -> bool:
        return self.state == UpstreamState.READY

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "version": self.version,
            "state": self.state,
            "url": self.base_url,
            "inflight": self.inflight,
            "last_error": self.last_error,
        }


class ExternalUpstream(Upstream):
    """An ``mlflow models serve`` that the user started (``--upstream URL``); we only talk to it."""

    def __init__(self, base_url: str, version: str, run_id: str | None = None):
        super().__init__(version, run_id)
        self._serve_at(base_url.rstrip("/"))
        self.state = UpstreamState.UNKNOWN

    async def is_up(self, session: aiohttp.ClientSession) -> bool:
        """Ask it: nobody tells us when someone else's process dies."""
        try:
            async with session.get(f"{self.base_url}/ping", timeout=_PING_TIMEOUT) as response:
                up = response.status == 200
        except (TimeoutError, aiohttp.ClientError) as exc:
            up, self.last_error = False, type(exc).__name__
        self.state = UpstreamState.READY if up else UpstreamState.DOWN
        return up


class ManagedUpstream(Upstream):
    """``mlflow models serve -m models:/<name>/<version>`` as a child process of the proxy."""

    kind = "managed"
    managed = True

    def __init__(self, model_uri: str, version: str, run_id: str | None, config):
        super().__init__(version, run_id)
        self.model_uri = model_uri
        self._config = config
        self.process: asyncio.subprocess.Process | None = None
        self.log_path: Path | None = None
        self.starts = 0
        self.retired = False

    def describe(self) -> dict:
        pid = self.process.pid if self.process and self.process.returncode is None else None
        return {
            **super().describe(),
            "pid": pid,
            "starts": self.starts,
            "log": str(self.log_path) if self.log_path else None,
        }

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start it and return once it answers the canary row; raise UpstreamStartError otherwise."""
        self.state, self.starts = UpstreamState.STARTING, self.starts + 1
        self._serve_at(None)
        port = free_port()
        self.log_path = Path(self._config.log_dir).resolve() / f"upstream-v{self.version}-{port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = serve_command(
            self.model_uri,
            port,
            env_manager=self._config.env_manager,
            workers=self._config.workers,
            timeout=self._config.timeout,
        )
        _logger.info("starting the model server for %s on port %s (log: %s)", self.model_uri, port, self.log_path)
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=upstream_env(),
                start_new_session=True,
                preexec_fn=_die_with_the_proxy if sys.platform == "linux" else None,
            )
        try:
            await self._wait_ready(session, f"http://127.0.0.1:{port}")
        except UpstreamStartError as exc:
            self.state, self.last_error = UpstreamState.FAILED, str(exc)
            await self._kill()
            raise
        self.state, self.last_error = UpstreamState.READY, None
        self._serve_at(f"http://127.0.0.1:{port}")
        _logger.info("model server for %s is ready at %s", self.model_uri, self.base_url)

    async def _wait_ready(self, session, base_url: str) -> None:
        deadline = time.monotonic() + self._config.start_timeout
        while time.monotonic() < deadline:
            if self.retired:
                raise UpstreamStartError("stopped while starting")
            if self.process.returncode is not None:
                raise UpstreamStartError(f"exited with code {self.process.returncode}: {self.failure_reason()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(f"{base_url}/ping", timeout=_PING_TIMEOUT) as response:
                    if response.status == 200:
                        return await check_canary(session, base_url + "/invocations", self._config.timeout)
            await asyncio.sleep(0.25)
        raise UpstreamStartError(f"not ready within {self._config.start_timeout:g} s")

    async def wait_exit(self) -> int:
        code = await self.process.wait()
        if not self.retired:
            self.state, self.last_error = UpstreamState.DOWN, f"exited with code {code}"
            self._serve_at(None)
        await self._kill()  # whatever it left behind in its session
        return code

    async def stop(self, drain_timeout: float) -> None:
        """Let calls already sent to it finish (bounded), then SIGTERM: uvicorn drains and exits."""
        self.retired = True
        deadline = time.monotonic() + drain_timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.state = UpstreamState.STOPPED
        self._serve_at(None)
        if self.process is None or self.process.returncode is not None:
            return
        _logger.info("stopping the model server for %s (pid %s)", self.model_uri, self.process.pid)
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=15)
        except TimeoutError:
            _logger.warning("model server pid %s ignored SIGTERM; killing it", self.process.pid)
        await self._kill()

    async def _kill(self) -> None:
        self._signal(signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.process.wait(), timeout=10)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def failure_reason(self) -> str:
        """The last error line of its log: why MLflow could not start it, without a traceback."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-200:]
        except OSError:
            return "no log"
        errors = [line.strip() for line in lines if "Error" in line or "Exception" in line]
        line = (errors or [line.strip() for line in lines if line.strip()] or ["no output"])[-1]
        return line[:300]


async def check_canary(session: aiohttp.ClientSession, invocations_url: str, timeout: float) -> None:
    """A known setosa row must come back as setosa: the model loaded and predicts sensibly."""
    try:
        predictions = await post_rows(session, invocations_url, [list(CANARY_ROW)], timeout)
    except UpstreamError as exc:
        raise UpstreamStartError(f"canary request failed: {exc.message}") from None
    answer = predictions[0].get("prediction") if isinstance(predictions[0], dict) else None
    if answer != CANARY_CLASS:
        raise UpstreamStartError(f"canary row answered {str(answer)[:40]!r}, expected {CANARY_CLASS!r}")


def serve_command(
    model_uri: str, port: int, *, env_manager: str = "local", workers: int = 1, timeout: float | None = None
) -> list[str]:
    """``mlflow models serve`` of one model version on a loopback port: how the proxy starts a model server."""
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "-h", "127.0.0.1", "-p", str(port)]
    command += ["--env-manager", env_manager, "-w", str(workers)]
    return command + (["-t", str(math.ceil(timeout))] if timeout is not None else [])


def upstream_env() -> dict:
    """The venv's bin on PATH (MLflow launches ``uvicorn`` by name), long keep-alive, no access log.

    uvicorn's command line reads ``UVICORN_*`` variables. By default it closes idle
    connections after 5 s, racing the proxy's pooled ones, and logs every request, which
    costs the upstream CPU per call; the proxy's own record of each request is enough.
    One BLAS thread (unless the user set one): a model server scores small batches, and
    OpenBLAS's idle threads busy-wait on the cores the proxy needs.
    """
    return {
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "UVICORN_TIMEOUT_KEEP_ALIVE": "75",
        "UVICORN_ACCESS_LOG": "false",
    }


def _die_with_the_proxy() -> None:
    """In the child, before exec: SIGTERM it when the proxy dies, even by SIGKILL, so no server is orphaned.

    MLflow sets the same for the uvicorn it launches, so the whole model server goes.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
