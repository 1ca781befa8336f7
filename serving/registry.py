"""The registry, as the proxy asks and writes it: where aliases point, what a version is, version tags, alias moves.

The proxy asks the same few things whatever the store, so the operations are written
once, below, over any ``iris_core.registry_client.RegistryClient``, and run where that
store's client lives:

- an http(s) tracking server: ``serving.registry_rest`` speaks MLflow's REST API over
  aiohttp, in the proxy's own process, which then never imports MLflow;
- any other store (``sqlite:///mlflow.db``, a database URI, a plugin): MLflow's own client,
  in one long-lived spawned helper process that keeps its client between calls. Importing
  MLflow costs ~200 MB and hundreds of thousands of objects that every garbage collection
  would then walk; the proxy's hot path wants neither, and only ever sees small tuples.

The proxy writes to the registry only through ``RegistryWriter``'s two calls (the shadow
evidence and rollout outcomes as version tags, and the automatic rollback's
compare-and-set alias move, ``iris_core.alias_history.move_alias_if``, the same logic and
the same history records whichever client runs it).

The helper asks the kernel to kill it when the proxy dies (``PR_SET_PDEATHSIG``), even by
SIGKILL, so it never outlives the proxy with the store open; multiprocessing's resource
tracker then sees its last pipe close and exits too.
"""

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol
from urllib.parse import urlparse

from iris_core.errors import IrisError, NotFound, RegistryUnavailable
from iris_core.processes import die_with_parent
from iris_core.refs import ModelRef, RunModelRef
from iris_core.registry_client import RegistryClient
from iris_core.resolver import Resolved

MAX_EXAMPLE_BYTES = 2**20  # an input example larger than this is not read (readiness then uses /ping)
EXAMPLE_ROWS = 5
LOOKUP_TIMEOUT_S = 120.0  # one whole operation; each HTTP call of the REST client has its own deadline too
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's, when MLFLOW_TRACKING_URI is not set
# MLflow's authentication plugins: only MLflow's own client can speak them.
_AUTH_PLUGINS = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4")
_client_instance = None  # the helper process's MlflowClient, reused across calls


class RegistryWriter(Protocol):
    """What the proxy writes to the registry; each call raises RegistryUnavailable when it cannot."""

    async def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        """Set these tags on a version of the served model."""

    async def move_alias_if(self, alias: str, expected: str, version: str, *, how: str, reason: str, by: str) -> bool:
        """Move the alias to ``version`` if it still points at ``expected`` (recorded in the alias history);
        False when it did not (it had moved, or another replica moved it): see ``iris_core.alias_history``."""


def open_lookup(model: ModelRef | RunModelRef, env=os.environ) -> "RegistryLookup":
    """The lookup for the store MLflow's client would use here: REST for an http(s) server, else the helper.

    A ``runs:/`` model is looked up in runs and artifacts, which only MLflow's client reads.
    """
    uri = store_uri(env)
    rest = urlparse(uri).scheme in ("http", "https") and not isinstance(model, RunModelRef)
    if rest and not any(env.get(name) for name in _AUTH_PLUGINS):
        from serving.registry_rest import RestRegistryLookup

        return RestRegistryLookup(model, uri, env)
    return HelperRegistryLookup(model)


def store_uri(env=os.environ) -> str:
    """The registry URI MLflow's client would use: ``MLFLOW_REGISTRY_URI``, else the tracking URI."""
    return env.get("MLFLOW_REGISTRY_URI") or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# -- the operations, over any RegistryClient ---------------------------------------------------


def lookup_version(client: RegistryClient, model: ModelRef) -> Resolved | None:
    """The version ``model`` names now; None when its alias is not set, RegistryUnavailable for anything else missing."""
    from iris_core.resolver import resolve

    try:
        return resolve(client, model)
    except NotFound as exc:
        if exc.missing == "alias":
            return None
        raise RegistryUnavailable(str(exc)) from None


def read_version_tags(client: RegistryClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags or {})


def write_version_tags(client: RegistryClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def document_with_mlflow(client, model: ModelRef, version: str) -> dict:
    """What the version's ``MLmodel`` file says of it, as MLflow reads it (``serving.model_facts`` builds on it).

    ``signature`` (``ModelSignature.to_dict()``, None without one), ``metadata`` (where
    training logs the table contract) and ``example``: the first rows of the input example
    logged with the model, in pandas' split orient, or None.
    """
    from mlflow.models import get_model_info

    uri = model.version_uri(version)
    info = get_model_info(uri)
    example = None
    saved = info.saved_input_example_info or {}
    if saved.get("type") == "dataframe" and saved.get("artifact_path"):
        example = _example_with_mlflow(f"{uri.rstrip('/')}/{saved['artifact_path']}")
    signature = info.signature
    return {
        "signature": signature.to_dict() if signature is not None else None,
        "metadata": info.metadata,
        "example": example,
    }


def _example_with_mlflow(uri: str) -> dict | None:
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as directory:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=directory)
            with open(path, "rb") as handle:
                return example_rows(handle.read(MAX_EXAMPLE_BYTES + 1))
        except (OSError, ValueError, mlflow.exceptions.MlflowException):
            return None


def example_rows(raw: bytes) -> dict | None:
    """The first rows of an input example file (pandas' split orient), small enough to keep; None otherwise."""
    import json

    if len(raw) > MAX_EXAMPLE_BYTES:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        return None
    return {"columns": document.get("columns"), "data": document["data"][:EXAMPLE_ROWS]}


def move_alias_back(client: RegistryClient, name, alias, expected, version, how, reason, by) -> bool:
    from iris_core.alias_history import move_alias_if

    return move_alias_if(client, name, alias, expected, version, how=how, reason=reason, by=by) is not None


def reported(function, *args) -> tuple:
    """``function(*args)`` as ("ok", value) or ("error", one line): picklable, and never a traceback."""
    from iris_core.tracking import one_line

    try:
        return "ok", function(*args)
    except IrisError as exc:
        return "error", str(exc)
    except Exception as exc:  # any failure of a store or its client becomes one line
        return "error", one_line(exc)


def unpacked(answer: tuple):
    """The value of a ``reported`` answer, or its error as RegistryUnavailable."""
    state, value = answer
    if state == "error":
        raise RegistryUnavailable(value)
    return value


# -- the lookups -----------------------------------------------------------------------------


class RegistryLookup:
    """Resolves one model URI (``ModelRef``) again and again; a ``RegistryWriter`` too.

    Subclasses decide where the operations run (``_run``, and ``_run_blocking`` before an
    event loop exists); every call fails as RegistryUnavailable, never hangs past its deadline.
    """

    def __init__(self, model: ModelRef):
        self.model = model

    def resolve(self) -> Resolved | None:
        """The version now named (None when the alias is not set); blocks, for start-up."""
        return self._run_blocking(lookup_version, self.model)

    def document(self, version: str) -> dict:
        """What the version's MLmodel file says of it (``document_with_mlflow``); blocks, for start-up."""
        return self._run_blocking(self.read_document, self.model, version)

    async def document_async(self, version: str) -> dict:
        return await self._run(self.read_document, self.model, version)

    async def resolve_async(self, model: ModelRef | None = None) -> Resolved | None:
        """The version ``model`` (by default the served one) names now; None when its alias is not set."""
        return await self._run(lookup_version, model or self.model)

    async def version_tags(self, version: str) -> dict[str, str]:
        return await self._run(read_version_tags, self.model.name, version)

    async def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        await self._run(write_version_tags, self.model.name, version, tags)

    async def move_alias_if(self, alias: str, expected: str, version: str, *, how: str, reason: str, by: str) -> bool:
        return await self._run(move_alias_back, self.model.name, alias, expected, version, how, reason, by)

    # Reads what a version's MLflow model says of it: (client, model, version) -> dict.
    read_document = staticmethod(document_with_mlflow)

    async def _run(self, function, *args):
        """``function(client, *args)`` with this lookup's client: its value, or RegistryUnavailable."""
        raise NotImplementedError

    def _run_blocking(self, function, *args):
        """The same, before an event loop runs."""
        raise NotImplementedError

    def close(self, wait: bool = False) -> None:
        """Let go of whatever the lookup holds; ``wait`` for it to finish only when it is idle."""


class HelperRegistryLookup(RegistryLookup):
    """MLflow's client in one spawned helper process, started at the first call and kept."""

    def __init__(self, model: ModelRef):
        super().__init__(model)
        self._executor: ProcessPoolExecutor | None = None

    def _run_blocking(self, function, *args):
        try:
            return unpacked(self._pool().submit(_in_helper, function, *args).result(timeout=LOOKUP_TIMEOUT_S))
        except (BrokenProcessPool, TimeoutError) as exc:
            self.close()
            raise RegistryUnavailable(f"registry lookup failed: {type(exc).__name__}") from None

    async def _run(self, function, *args):
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool(), _in_helper, function, *args)
            return unpacked(await asyncio.wait_for(future, LOOKUP_TIMEOUT_S))
        except (TimeoutError, BrokenProcessPool) as exc:
            self.close()  # a fresh helper next time
            raise RegistryUnavailable(f"registry call failed: {type(exc).__name__}") from None

    def close(self, wait: bool = False) -> None:
        """Stop the helper; ``wait`` only when it is idle (it may be hung after a time-out).

        Before the process exits, wait: a pool shut down without waiting can make
        CPython's exit hook write to its closed pipe and print a traceback.
        """
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = helper_pool()
        return self._executor


def helper_pool() -> ProcessPoolExecutor:
    """One spawned helper process that dies with the proxy: where MLflow's own client runs for the proxy."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=prepare_helper,
        initargs=(os.getpid(),),
    )


def prepare_helper(proxy_pid: int) -> None:
    """In the helper: die with the proxy, and leave Ctrl-C (sent to the whole process group) to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != proxy_pid:  # the proxy died while this helper was starting
        os._exit(1)


def _in_helper(function, *args) -> tuple:
    """Runs in the helper: one operation with the process's MlflowClient."""
    return reported(_with_helper_client, function, *args)


def _with_helper_client(function, *args):
    global _client_instance
    if _client_instance is None:
        from mlflow import MlflowClient

        _client_instance = MlflowClient()
    return function(_client_instance, *args)
