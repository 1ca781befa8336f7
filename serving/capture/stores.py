"""Where a capture's finished files go: one ``put`` per file, whole, under its final name, with a deadline.

Each store makes a file appear only once it is complete, so no reader ever sees half of one:

- ``DirectoryStore``, a local directory (or ``file://``): the file is copied beside its final
  name under a name starting with ``.`` (which readers skip), synced, then renamed over it;
- ``ArtifactProxyStore``, ``mlflow-artifacts:/...`` on a tracking server started with
  ``--serve-artifacts``: one ``PUT`` of MLflow's artifact REST API over aiohttp, in the
  uploader thread's own event loop, with the tracking server's credentials
  (``serving.registry.rest.Connection``); the server stages the upload and renames it into
  place (MLflow's ``LocalArtifactRepository``), or hands it to its object store, whose
  objects appear whole. No MLflow is imported: the proxy's process tree stays free of it;
- ``HelperStore``, any other scheme (``s3://``, ``gs://``, ``wasbs://``...): MLflow's own
  artifact repository for the location, in one spawned helper process that dies with the
  proxy, as the registry helper does (``serving.registry.lookup``). MLflow then needs the store's
  client library (boto3, google-cloud-storage...) installed beside it. Object stores write an
  object whole or not at all.

Uploading a file again (after a time-out that may have hidden a success) writes the same
bytes under the same name, so a retry never damages the capture. Every failure is a
``StoreError`` of one line, never a traceback or a credential.
"""

import asyncio
import contextlib
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlparse

import aiohttp

from iris_core.capture import child, is_artifact_proxy, local_directory
from iris_core.errors import RegistryUnavailable
from iris_core.redaction import redact
from serving.capture.spool import sync_directory
from serving.errors import ConfigError
from serving.registry.lookup import helper_pool
from serving.registry.rest import ARTIFACTS_PREFIX, Connection

HELPER_TIMEOUT_S = 120.0  # one upload through MLflow's client, its own retries included
_BYTES_PER_S = 1_000_000  # the slowest transfer a deadline allows for, on top of the request's own deadline


class StoreError(Exception):
    """One upload failed; the message is one line for the log and /health."""


class Store(Protocol):
    location: str  # for /health and the log: no credentials
    timeout_s: float  # the longest one put may take before it fails

    def put(self, local: Path, relative: str) -> None:
        """Store the file ``local`` at ``relative`` under the location, whole, or raise ``StoreError``."""

    def close(self) -> None:
        """Let go of connections or helpers."""


def open_store(location: str, env=os.environ) -> Store:
    """The store for a ``--capture-uri``; a ``ConfigError`` when it cannot be one (checked at start)."""
    directory = local_directory(location)
    if directory is not None:
        return DirectoryStore(directory)
    if is_artifact_proxy(location):
        return ArtifactProxyStore(location, env)
    return HelperStore(location)


class DirectoryStore:
    def __init__(self, directory: Path):
        self.directory = directory.absolute()
        self.location = str(self.directory)
        self.timeout_s = 0.0  # a local copy has no deadline; a disk that hangs shows as stalled

    def put(self, local: Path, relative: str) -> None:
        final = self.directory / relative
        staged = final.with_name(f".{final.name}.uploading")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "rb") as source, open(staged, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
                target.flush()
                os.fsync(target.fileno())
            os.replace(staged, final)
            sync_directory(final.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                staged.unlink()
            raise StoreError(f"cannot write {final.parent}: {exc.strerror or exc}") from None

    def close(self) -> None:
        pass


class ArtifactProxyStore:
    """``mlflow-artifacts:/path`` (the tracking server of ``MLFLOW_TRACKING_URI``) or ``mlflow-artifacts://host:port/path``."""

    def __init__(self, location: str, env=os.environ):
        parsed = urlparse(location)
        tracking = env.get("MLFLOW_TRACKING_URI", "")
        tracking_scheme = urlparse(tracking).scheme
        if parsed.netloc:
            base = f"{tracking_scheme if tracking_scheme in ('http', 'https') else 'http'}://{parsed.netloc}"
        elif tracking_scheme in ("http", "https"):
            base = tracking
        else:
            raise ConfigError(
                f"--capture-uri {location} is the tracking server's artifact store: set MLFLOW_TRACKING_URI to "
                "the server (http://host:port), started with --serve-artifacts"
            )
        try:
            self.connection = Connection.from_env(base, env)
        except RegistryUnavailable as exc:
            raise ConfigError(f"--capture-uri {location}: {exc}") from None
        self.root = parsed.path.strip("/")
        self.location = redact(location)
        self.timeout_s = self.connection.timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None

    def put(self, local: Path, relative: str) -> None:
        """Runs in the uploader thread, on an event loop of its own: the proxy's loop never waits for the store."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            data = local.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {local.name} from the spool: {exc.strerror or exc}") from None
        self._loop.run_until_complete(self._put(data, child(self.root, relative)))

    async def _put(self, data: bytes, path: str) -> None:
        connection = self.connection
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=True, cookie_jar=aiohttp.DummyCookieJar())
        deadline = connection.timeout_s + len(data) / _BYTES_PER_S
        try:
            async with self._session.put(
                connection.base_url + ARTIFACTS_PREFIX + quote(path.lstrip("/")),
                data=data,
                headers={**connection.headers, "Content-Type": "application/octet-stream"},
                ssl=connection.ssl,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=deadline),
            ) as response:
                status = response.status
                await response.content.read(4096)
        except aiohttp.ClientSSLError:
            raise StoreError(f"tracking server {connection.host}: its TLS certificate was not accepted") from None
        except aiohttp.ClientConnectorError:
            raise StoreError(f"tracking server unreachable: {connection.host}") from None
        except TimeoutError:
            raise StoreError(f"tracking server {connection.host} did not take a file within {deadline:.0f} s") from None
        except aiohttp.ClientError as exc:
            raise StoreError(f"tracking server {connection.host} failed: {type(exc).__name__}") from None
        if status == 200:
            return
        if status in (401, 403):
            raise StoreError(
                f"the tracking server refused the upload ({status}): the proxy's MLflow user needs EDIT on the "
                "experiment whose artifact root holds the capture"
            )
        if status == 503:
            raise StoreError(
                f"tracking server {connection.host} does not serve artifacts (start it with --serve-artifacts)"
            )
        raise StoreError(f"the tracking server answered {status} to an upload")

    def close(self) -> None:
        if self._loop is None:
            return
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._session.close())
            self._session = None
        self._loop.close()
        self._loop = None


class HelperStore:
    """MLflow's artifact repository for the location, in one spawned helper process started at the first upload."""

    def __init__(self, location: str):
        self.root = location.rstrip("/")
        self.location = redact(location)
        self.timeout_s = HELPER_TIMEOUT_S
        self._executor: ProcessPoolExecutor | None = None

    def put(self, local: Path, relative: str) -> None:
        directory, _, _ = relative.rpartition("/")
        if self._executor is None:
            self._executor = helper_pool()
        try:
            error = self._executor.submit(_log_artifact, self.root, str(local), directory).result(self.timeout_s)
        except (FutureTimeout, BrokenProcessPool) as exc:
            self.close()  # a fresh helper next time
            raise StoreError(f"MLflow's artifact client failed: {type(exc).__name__}") from None
        if error is not None:
            raise StoreError(redact(error))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


_repositories: dict = {}  # the helper's repositories, by root, reused between uploads


def _log_artifact(root: str, local: str, directory: str) -> str | None:
    """Runs in the helper: one upload with MLflow's repository for ``root``; None, or the failure in one line."""
    from iris_core.tracking import one_line

    try:
        repository = _repositories.get(root)
        if repository is None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repository = _repositories[root] = get_artifact_repository(root)
        repository.log_artifact(local, directory or None)
    except Exception as exc:  # any failure of a store or its client becomes one line
        return one_line(exc)
    return None
