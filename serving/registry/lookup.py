"""Which registry the proxy asks, and MLflow's own client in a helper process for the stores only it reads.

The proxy asks the same few things whatever the store, so the operations are written
once (``serving.registry.base``), over any ``iris_core.registry_client.RegistryClient``,
and run where that store's client lives:

- an http(s) tracking server: ``serving.registry.rest`` speaks MLflow's REST API over
  aiohttp, in the proxy's own process, which then never imports MLflow;
- any other store (``sqlite:///mlflow.db``, a database URI, a plugin): MLflow's own client,
  in one long-lived spawned helper process that keeps its client between calls. Importing
  MLflow costs ~200 MB and hundreds of thousands of objects that every garbage collection
  would then walk; the proxy's hot path wants neither, and only ever sees small tuples.

The proxy writes to the registry only through the two calls of ``RegistryWriter``
(``serving.registry.base``): the shadow evidence and rollout outcomes as version tags, and
the automatic rollback's compare-and-set alias move, ``iris_core.alias_history.move_alias_if``, the same logic and
the same history records whichever client runs it.

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
from urllib.parse import urlparse

from iris_core.errors import RegistryUnavailable
from iris_core.processes import die_with_parent
from iris_core.refs import ModelRef, RunModelRef
from serving.registry.base import LOOKUP_TIMEOUT_S, RegistryLookup, reported, unpacked

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's, when MLFLOW_TRACKING_URI is not set
# MLflow's authentication plugins: only MLflow's own client can speak them.
_AUTH_PLUGINS = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4")
_client_instance = None  # the helper process's MlflowClient, reused across calls


def open_lookup(model: ModelRef | RunModelRef, env=os.environ) -> "RegistryLookup":
    """The lookup for the store MLflow's client would use here: REST for an http(s) server, else the helper.

    A ``runs:/`` model is looked up in runs and artifacts, which only MLflow's client reads.
    """
    uri = store_uri(env)
    rest = urlparse(uri).scheme in ("http", "https") and not isinstance(model, RunModelRef)
    if rest and not any(env.get(name) for name in _AUTH_PLUGINS):
        from serving.registry.rest import RestRegistryLookup

        return RestRegistryLookup(model, uri, env)
    return HelperRegistryLookup(model)


def store_uri(env=os.environ) -> str:
    """The registry URI MLflow's client would use: ``MLFLOW_REGISTRY_URI``, else the tracking URI."""
    return env.get("MLFLOW_REGISTRY_URI") or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


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
