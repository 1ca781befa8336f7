"""The registry, asked and written from a helper process: where aliases point, signatures, version tags, alias moves.

MLflow's client is synchronous and importing it costs ~200 MB and hundreds of thousands
of objects that every garbage collection would then walk. The proxy's hot path wants
neither, so every registry call runs in one long-lived spawned worker process that keeps
its client between calls; the proxy only ever sees small tuples.

The proxy writes to the registry only through ``RegistryWriter``'s two calls (the shadow
evidence and rollout outcomes as version tags, and the automatic rollback's
compare-and-set alias move), so another implementation of them, for instance over a
tracking server's REST API, can stand in for the helper process.

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
from typing import Protocol

from iris_core.errors import NotFound, RegistryUnavailable
from iris_core.processes import die_with_parent
from iris_core.refs import ModelRef
from iris_core.resolver import Resolved

LOOKUP_TIMEOUT_S = 120.0
_client_instance = None  # the worker process's MlflowClient, reused across calls


class RegistryWriter(Protocol):
    """What the proxy writes to the registry; each call raises RegistryUnavailable when it cannot."""

    async def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        """Set these tags on a version of the served model."""

    async def move_alias_if(self, alias: str, expected: str, version: str, *, how: str, reason: str, by: str) -> bool:
        """Move the alias to ``version`` if it still points at ``expected`` (recorded in the alias history);
        False when it did not (it had moved, or another replica moved it): see ``iris_core.alias_history``."""


class RegistryLookup:
    """Resolves one model URI (``ModelRef``) again and again, one call at a time; a ``RegistryWriter`` too."""

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

    async def resolve_async(self, model: ModelRef | None = None) -> Resolved | None:
        """The version ``model`` (by default the served one) names now; None when its alias is not set."""
        return _unpack(await self._call(_resolve, model or self.model))

    async def version_tags(self, version: str) -> dict[str, str]:
        return _answer(await self._call(_version_tags, self.model.name, version))

    async def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        _answer(await self._call(_set_version_tags, self.model.name, version, tags))

    async def move_alias_if(self, alias: str, expected: str, version: str, *, how: str, reason: str, by: str) -> bool:
        call = (_move_alias_if, self.model.name, alias, expected, version, how, reason, by)
        return _answer(await self._call(*call))

    def signature(self, version: str) -> dict | None:
        """The version's MLflow signature (``ModelSignature.to_dict()``), None when it has none; blocks, for start-up."""
        try:
            return _answer(self._pool().submit(_signature, self.model.version_uri(version)).result(LOOKUP_TIMEOUT_S))
        except (BrokenProcessPool, TimeoutError) as exc:
            self.close()
            raise RegistryUnavailable(f"registry lookup failed: {type(exc).__name__}") from None

    async def signature_async(self, version: str) -> dict | None:
        return _answer(await self._call(_signature, self.model.version_uri(version)))

    async def _call(self, function, *args) -> tuple:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool(), function, *args)
            return await asyncio.wait_for(future, LOOKUP_TIMEOUT_S)
        except (TimeoutError, BrokenProcessPool) as exc:
            self.close()  # a fresh worker next time
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


def _answer(answer: tuple):
    state, value = answer
    if state == "error":
        raise RegistryUnavailable(value)
    return value


def _prepare_worker(proxy_pid: int) -> None:
    """In the worker: die with the proxy, and leave Ctrl-C (sent to the whole process group) to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != proxy_pid:  # the proxy died while this worker was starting
        os._exit(1)


def _resolve(model: ModelRef) -> tuple:
    """Runs in the worker: ("ok", version, run_id), ("missing", None, None) or ("error", message, None)."""
    from iris_core.resolver import resolve
    from iris_core.tracking import one_line

    try:
        found = resolve(_client(), model)
    except NotFound as exc:
        return ("missing", None, None) if exc.missing == "alias" else ("error", str(exc), None)
    except Exception as exc:  # any failure becomes one picklable line
        return "error", one_line(exc), None
    return "ok", found.version, found.run_id


def _client():
    global _client_instance
    from mlflow import MlflowClient

    if _client_instance is None:
        _client_instance = MlflowClient()
    return _client_instance


def _version_tags(name: str, version: str) -> tuple:
    """Runs in the worker: ("ok", tags) or ("error", message)."""
    from iris_core.tracking import one_line

    try:
        return "ok", dict(_client().get_model_version(name, version).tags or {})
    except Exception as exc:
        return "error", one_line(exc)


def _set_version_tags(name: str, version: str, tags: dict[str, str]) -> tuple:
    from iris_core.tracking import one_line

    try:
        client = _client()
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
    except Exception as exc:
        return "error", one_line(exc)
    return "ok", None


def _move_alias_if(name: str, alias: str, expected: str, version: str, how: str, reason: str, by: str) -> tuple:
    from iris_core.alias_history import move_alias_if
    from iris_core.tracking import one_line

    try:
        moved = move_alias_if(_client(), name, alias, expected, version, how=how, reason=reason, by=by)
    except Exception as exc:
        return "error", one_line(exc)
    return "ok", moved is not None


def _signature(model_uri: str) -> tuple:
    """Runs in the worker: ("ok", the signature as a dict, or None) or ("error", message); reads the MLmodel file."""
    from iris_core.tracking import one_line

    try:
        from mlflow.models import get_model_info

        signature = get_model_info(model_uri).signature
    except Exception as exc:  # any failure becomes one picklable line
        return "error", one_line(exc)
    return "ok", signature.to_dict() if signature is not None else None
