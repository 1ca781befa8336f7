"""Where the model URI points now, asked of the registry from a helper process.

MLflow's client is synchronous and importing it costs ~200 MB and hundreds of thousands
of objects that every garbage collection would then walk. The proxy's hot path wants
neither, so the lookups run in one long-lived spawned worker process that keeps its
client between polls; the proxy only ever sees small tuples.

The worker asks the kernel to kill it when the proxy dies (``PR_SET_PDEATHSIG``), even by
SIGKILL, so it never outlives the proxy with the store open; multiprocessing's resource
tracker then sees its last pipe close and exits too.
"""

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from iris_core.errors import NotFound, RegistryUnavailable
from iris_core.processes import die_with_parent
from iris_core.refs import ModelRef
from iris_core.resolver import Resolved

LOOKUP_TIMEOUT_S = 120.0
_client = None  # the worker process's MlflowClient, reused across polls


class RegistryLookup:
    """Resolves one model URI (``ModelRef``) again and again, one call at a time."""

    def __init__(self, model: ModelRef):
        self.model = model
        self._executor: ProcessPoolExecutor | None = None

    def resolve(self) -> Resolved | None:
        """The version now named (None when the alias is not set); blocks, for start-up."""
        try:
            return _unpack(self._pool().submit(_resolve, self.model).result(timeout=LOOKUP_TIMEOUT_S))
        except (BrokenProcessPool, TimeoutError) as exc:
            self.close()
            raise RegistryUnavailable(f"registry lookup failed: {type(exc).__name__}") from None

    async def resolve_async(self) -> Resolved | None:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool(), _resolve, self.model)
            return _unpack(await asyncio.wait_for(future, LOOKUP_TIMEOUT_S))
        except (TimeoutError, BrokenProcessPool) as exc:
            self.close()  # a fresh worker next time
            raise RegistryUnavailable(f"registry lookup failed: {type(exc).__name__}") from None

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
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_prepare_worker,
                initargs=(os.getpid(),),
            )
        return self._executor


def _unpack(answer: tuple) -> Resolved | None:
    state, first, second = answer
    if state == "error":
        raise RegistryUnavailable(first)
    return None if state == "missing" else Resolved(first, second)


def _prepare_worker(proxy_pid: int) -> None:
    """In the worker: die with the proxy, and leave Ctrl-C (sent to the whole process group) to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != proxy_pid:  # the proxy died while this worker was starting
        os._exit(1)


def _resolve(model: ModelRef) -> tuple:
    """Runs in the worker: ("ok", version, run_id), ("missing", None, None) or ("error", message, None)."""
    global _client
    from iris_core.resolver import resolve
    from iris_core.tracking import one_line

    try:
        from mlflow import MlflowClient

        if _client is None:
            _client = MlflowClient()
        found = resolve(_client, model)
    except NotFound as exc:
        return ("missing", None, None) if exc.missing == "alias" else ("error", str(exc), None)
    except Exception as exc:  # any failure becomes one picklable line
        return "error", one_line(exc), None
    return "ok", found.version, found.run_id
