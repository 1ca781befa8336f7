"""The scoring servers behind the proxy: one someone else runs, or one ``mlflow models serve`` we run.

A managed upstream serves one fixed version (``models:/<name>/<N>``), never an alias:
MLflow resolves an alias only at start, so the version a process serves is known for
its whole life and the proxy can say which version answered. It runs in its own process
session, so stopping it stops the uvicorn it launches too.

It listens on a Unix socket in a directory only the proxy's user can enter (mode 0700),
not on a TCP port: another local user cannot reach it around the proxy (its token,
validation, ``/docs`` and stack traces). uvicorn reads ``--uds`` from ``UVICORN_UDS``,
which ``mlflow models serve`` passes on with the rest of its environment.

A process that is running is not necessarily answering: while it is up, the proxy asks
its ``/ping`` every ``liveness_interval`` seconds, and one that misses ``liveness_misses``
answers in a row (each within ``liveness_timeout``) is counted down and killed, so the
router restarts it as it would one that died.
"""

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from enum import StrEnum
from pathlib import Path

import aiohttp

from iris_core.processes import die_with_parent, free_port, is_running
from iris_core.redaction import redact
from iris_core.table.models import answer_class
from serving.config import SECRET_ENVS
from serving.errors import ServingError
from serving.files.private import open_private
from serving.upstreams.call_stats import CallStats
from serving.upstreams.forwarding import UpstreamError, post_rows, unavailable

_logger = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
LOG_PREFIX = "upstream-v"  # model-server logs: upstream-v<version>-<port>.log
_PING_TIMEOUT = aiohttp.ClientTimeout(total=2)
_SOCKET_HOST = "http://model-server"  # the host part of URLs sent over a Unix socket means nothing


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
    """A scoring server the proxy can send rows to, serving one model version.

    ``facts`` (``serving.registry.model_facts.ModelFacts``) is what the registry says of that version:
    the contract requests to it are checked against, the features it is sent, its readiness
    check. The router sets them before the upstream starts.
    """

    kind = "external"
    managed = False  # started, restarted and stopped by the router

    def __init__(self, version: str, run_id: str | None = None, facts=None):
        self.version = version
        self.run_id = run_id
        self.facts = facts
        self.base_url: str | None = None
        self.invocations_url: str | None = None  # set only while it takes requests
        self.state = UpstreamState.STARTING
        self.inflight = 0
        self.last_error: str | None = None
        self.stats = CallStats()  # every call's outcome and latency, read by the canary analysis

    def _serve_at(self, base_url: str | None) -> None:
        self.base_url = base_url
        self.invocations_url = f"{base_url}/invocations" if base_url else None

    @property
    def layout(self) -> tuple:
        """The names and types of the features its version reads (two upstreams with one layout take the same rows)."""
        return self.facts.layout if self.facts is not None else None

    async def score(
        self,
        session: aiohttp.ClientSession,
        rows: list[list],
        timeout: float,
        counted: bool = True,
        max_answer_bytes: int | None = None,
    ) -> list:
        """One ``/invocations`` call; ``inflight`` counts calls so that a retiring upstream is drained first.

        ``counted=False`` keeps the call out of ``stats`` (rows of requests that named this
        version); an answer longer than ``max_answer_bytes`` fails the call unread (502).
        """
        url = self.invocations_url
        started = time.perf_counter()
        predictions = None
        self.inflight += 1
        try:
            if url is None:
                raise unavailable()
            predictions = await post_rows(session, url, self.facts.names, rows, timeout, max_answer_bytes)
            return predictions
        finally:
            self.inflight -= 1
            if counted:
                self.stats.observe(time.perf_counter() - started, len(rows), predictions)

    async def is_up(self, session: aiohttp.ClientSession) -> bool:
        return self.state == UpstreamState.READY

    async def check(self, session: aiohttp.ClientSession, timeout: float) -> None:
        """Raise UpstreamStartError unless it passes its version's readiness check now (``/ready``)."""
        if self.invocations_url is None:
            raise UpstreamStartError("it is not serving")
        await check_ready(session, self.base_url, self.facts, timeout)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "version": self.version,
            "state": self.state,
            "url": redact(self.base_url) if self.base_url else None,
            "inflight": self.inflight,
            "last_error": self.last_error,
        }


class ExternalUpstream(Upstream):
    """An ``mlflow models serve`` that the user started (``--upstream URL``); we only talk to it."""

    def __init__(self, base_url: str, version: str, run_id: str | None = None, facts=None):
        super().__init__(version, run_id, facts)
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
    """``mlflow models serve -m models:/<name>/<version>`` as a child process of the proxy, on a Unix socket."""

    kind = "managed"
    managed = True

    def __init__(self, model_uri: str, version: str, run_id: str | None, config, facts=None):
        super().__init__(version, run_id, facts)
        self.model_uri = model_uri
        self._config = config
        self.process: asyncio.subprocess.Process | None = None
        self.log_path: Path | None = None
        self.socket_path: Path | None = None
        self.starts = 0
        self.retired = False
        self._client: aiohttp.ClientSession | None = None  # its own connection pool, over its socket

    def describe(self) -> dict:
        pid = self.process.pid if self.process and self.process.returncode is None else None
        return {
            **super().describe(),
            "url": f"unix:{self.socket_path}" if self.base_url else None,
            "pid": pid,
            "starts": self.starts,
            "log": str(self.log_path) if self.log_path else None,
        }

    async def score(
        self,
        session: aiohttp.ClientSession,
        rows: list[list],
        timeout: float,
        counted: bool = True,
        max_answer_bytes: int | None = None,
    ) -> list:
        return await super().score(self._client, rows, timeout, counted, max_answer_bytes)

    async def check(self, session: aiohttp.ClientSession, timeout: float) -> None:
        await super().check(self._client, timeout)

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start it and return once it passes its readiness check; raise UpstreamStartError otherwise."""
        self.state, self.starts = UpstreamState.STARTING, self.starts + 1
        self._serve_at(None)
        port = free_port()  # uvicorn is given one, but listens on the socket instead
        self.socket_path = socket_directory() / "uvicorn.sock"
        await self._close_client()  # a restart: the last process's connections are dead
        self._client = _socket_session(self.socket_path)
        log_dir = Path(self._config.log_dir).resolve()
        log_dir.mkdir(parents=True, exist_ok=True)
        prune_logs(log_dir, keep=self._config.keep_logs - 1)  # room for this one
        self.log_path = log_dir / f"{LOG_PREFIX}{self.version}-{port}.log"
        command = serve_command(
            self.model_uri,
            port,
            env_manager=self._config.env_manager,
            workers=self._config.workers,
            timeout=self._config.timeout,
        )
        _logger.info("starting the model server for %s (log: %s)", self.model_uri, self.log_path)
        with open_private(self.log_path) as log:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env={**upstream_env(), "UVICORN_UDS": str(self.socket_path)},
                start_new_session=True,
                preexec_fn=die_with_parent,  # SIGTERM when the proxy dies, even by SIGKILL; MLflow
                # sets the same for the uvicorn it launches, so no model server is orphaned
            )
        try:
            await self._wait_ready()
        except UpstreamStartError as exc:
            self.state, self.last_error = UpstreamState.FAILED, str(exc)
            await self._kill()
            raise
        self.state, self.last_error = UpstreamState.READY, None
        self._serve_at(_SOCKET_HOST)
        _logger.info("model server for %s is ready (pid %s)", self.model_uri, self.process.pid)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._config.start_timeout
        while time.monotonic() < deadline:
            if self.retired:
                raise UpstreamStartError("stopped while starting")
            if self.process.returncode is not None:
                raise UpstreamStartError(f"exited with code {self.process.returncode}: {self.failure_reason()}")
            if await self._answers_ping(_PING_TIMEOUT):
                return await check_ready(self._client, _SOCKET_HOST, self.facts, self._config.timeout)
            await asyncio.sleep(0.25)
        raise UpstreamStartError(f"not ready within {self._config.start_timeout:g} s")

    async def _answers_ping(self, timeout: aiohttp.ClientTimeout) -> bool:
        try:
            async with self._client.get(f"{_SOCKET_HOST}/ping", timeout=timeout) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def wait_exit(self) -> int:
        """Until it exits, or stops answering and is killed for it (see the module's docstring): its exit code."""
        watchdog = asyncio.get_running_loop().create_task(self._watch())
        try:
            code = await self.process.wait()
        finally:
            watchdog.cancel()
        if not self.retired:
            if self.state != UpstreamState.DOWN:
                self.state, self.last_error = UpstreamState.DOWN, f"exited with code {code}"
            self._serve_at(None)
        await self._kill()  # whatever it left behind in its session
        return code

    async def _watch(self) -> None:
        """Kill it once it has missed ``liveness_misses`` pings in a row; its exit then ends ``wait_exit``."""
        config = self._config
        timeout = aiohttp.ClientTimeout(total=config.liveness_timeout)
        misses = 0
        while not self.retired:
            await asyncio.sleep(config.liveness_interval)
            if self.retired:
                return
            if await self._answers_ping(timeout):
                misses = 0
                continue
            misses += 1
            if misses < config.liveness_misses:
                continue
            self.state = UpstreamState.DOWN
            self.last_error = (
                f"stopped answering (no /ping answer within {config.liveness_timeout:g} s, {misses} times)"
            )
            self._serve_at(None)
            _logger.error(
                "model server for %s (pid %s) %s; killing it", self.model_uri, self.process.pid, self.last_error
            )
            self._signal(signal.SIGKILL)
            return

    async def stop(self, drain_timeout: float) -> None:
        """Let calls already sent to it finish (bounded), then SIGTERM: uvicorn drains and exits."""
        self.retired = True
        deadline = time.monotonic() + drain_timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.state = UpstreamState.STOPPED
        self._serve_at(None)
        if self.process is not None and self.process.returncode is None:
            _logger.info("stopping the model server for %s (pid %s)", self.model_uri, self.process.pid)
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                _logger.warning("model server pid %s ignored SIGTERM; killing it", self.process.pid)
        await self._kill()
        await self._close_client()

    async def _kill(self) -> None:
        """SIGKILL what is left of its process group, then remove its socket's directory."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout=10)
        if self.socket_path is not None:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)

    async def _close_client(self) -> None:
        """Only once no call can be using it: after a stop, or before the next start."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

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
        return redact(line[:300])


SOCKET_PREFIX = "iris-model-server-"


def socket_directory() -> Path:
    """A new directory (mode 0700) for one model server's socket, named after the proxy's pid.

    A proxy killed outright cannot remove the directories of its model servers; the next
    one to start removes those of proxies no longer running (only the user's own).
    """
    if not _swept:
        _sweep_socket_directories()
    return Path(tempfile.mkdtemp(prefix=f"{SOCKET_PREFIX}{os.getpid()}-"))


_swept = False


def _sweep_socket_directories() -> None:
    global _swept
    _swept = True
    for directory in Path(tempfile.gettempdir()).glob(f"{SOCKET_PREFIX}*-*"):
        pid = directory.name[len(SOCKET_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError, ValueError):
            if directory.is_dir() and directory.stat().st_uid == os.geteuid() and not is_running(int(pid)):
                shutil.rmtree(directory, ignore_errors=True)


def _socket_session(path: Path) -> aiohttp.ClientSession:
    connector = aiohttp.UnixConnector(path=str(path), limit=100, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)


def prune_logs(directory: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest model-server logs in ``directory``; returns what was deleted.

    Every start writes a new log (one per version and port), so a long-lived proxy that
    rolls out often, or one restarted every day, would fill the disk. A running server
    whose log goes keeps writing to it; only the file's name is gone.
    """
    logs = []
    for path in directory.glob(f"{LOG_PREFIX}*.log"):
        with contextlib.suppress(OSError):
            logs.append((path.stat().st_mtime, path))
    logs.sort(reverse=True)
    deleted = []
    for _, path in logs[max(keep, 0) :]:
        with contextlib.suppress(OSError):
            path.unlink()
            deleted.append(path)
    if deleted:
        _logger.info("deleted %d old model-server logs from %s (keeping %d)", len(deleted), directory, keep)
    return deleted


async def check_ready(session: aiohttp.ClientSession, base_url: str, facts, timeout: float) -> None:
    """The version's readiness check: its readiness row scored (with the answer it must get, when it has one), else
    its ``/ping`` answered; the model loaded and predicts sensibly."""
    readiness = facts.readiness
    if readiness is None:
        try:
            async with session.get(f"{base_url}/ping", timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                if response.status == 200:
                    return
                raise UpstreamStartError(f"/ping answered {response.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamStartError(f"/ping failed: {type(exc).__name__}") from None
    try:
        predictions = await post_rows(session, f"{base_url}/invocations", facts.names, [list(readiness.row)], timeout)
    except UpstreamError as exc:
        raise UpstreamStartError(f"readiness request failed: {exc.message}") from None
    answer = answer_class(predictions[0])
    if readiness.answer is not None and answer != readiness.answer:
        raise UpstreamStartError(f"readiness row answered {str(answer)[:40]!r}, expected {readiness.answer[:40]!r}")


def serve_command(
    model_uri: str, port: int, *, env_manager: str = "local", workers: int = 1, timeout: float | None = None
) -> list[str]:
    """``mlflow models serve`` of one model version on a loopback port: how the proxy starts a model server.

    The proxy's own (``ManagedUpstream``) also sets ``UVICORN_UDS``, so it listens on a Unix
    socket instead of the port.
    """
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "-h", "127.0.0.1", "-p", str(port)]
    command += ["--env-manager", env_manager, "-w", str(workers)]
    return command + (["-t", str(math.ceil(timeout))] if timeout is not None else [])


def upstream_env() -> dict:
    """The venv's bin on PATH (MLflow launches ``uvicorn`` by name), long keep-alive, no access log.

    uvicorn's command line reads ``UVICORN_*`` variables. By default it closes idle
    connections after 5 s, racing the proxy's pooled ones, and logs every request, which
    costs the upstream CPU per call; the proxy's own record of each request is enough.
    One BLAS thread (unless the user set one): a model server scores small batches, and
    OpenBLAS's idle threads busy-wait on the cores the proxy needs. The proxy's API token
    and the webhook secret are not passed on: a model server (whose model is code) has no use for them.
    """
    return {
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **{name: value for name, value in os.environ.items() if name not in SECRET_ENVS},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "UVICORN_TIMEOUT_KEEP_ALIVE": "75",
        "UVICORN_ACCESS_LOG": "false",
    }
