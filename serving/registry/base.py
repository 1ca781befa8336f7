"""What the proxy asks of and writes to a registry, written once over any registry client.

The operations (``lookup_version``, the version tags, the alias history's compare-and-set
move, what a version's MLmodel says) take an ``iris_core.registry_client.RegistryClient``
and run wherever that store's client lives: MLflow's own client in a helper process
(``serving.registry.lookup``) or the REST client of an http(s) tracking server
(``serving.registry.rest``). ``RegistryLookup`` is the interface both lookups share; each
answer crosses back as ``reported`` tuples, so a failure is one line, never a traceback.
"""

from enum import StrEnum
from typing import Protocol

from iris_core.errors import IrisError, NotFound, RegistryUnavailable
from iris_core.refs import ModelRef
from iris_core.registry_client import RegistryClient
from iris_core.resolver import Resolved

MAX_EXAMPLE_BYTES = 2**20  # an input example larger than this is not read (readiness then uses /ping)
EXAMPLE_ROWS = 5
LOOKUP_TIMEOUT_S = 120.0  # one whole operation; each HTTP call of the REST client has its own deadline too


class RegistryState(StrEnum):
    """Whether the last look at the registry worked, as ``/health`` and ``/metrics`` tell it."""

    OK = "ok"
    NOT_USED = "not_used"  # --upstream without a version to look up
    UNREACHABLE = "unreachable"
    ALIAS_MISSING = "alias_missing"


class RegistryWriter(Protocol):
    """What the proxy writes to the registry; each call raises RegistryUnavailable when it cannot."""

    async def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        """Set these tags on a version of the served model."""

    async def move_alias_if(self, alias: str, expected: str, version: str, *, how: str, reason: str, by: str) -> bool:
        """Move the alias to ``version`` if it still points at ``expected`` (recorded in the alias history);
        False when it did not (it had moved, or another replica moved it): see ``iris_core.alias_history``."""


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
    """What the version's ``MLmodel`` file says of it, as MLflow reads it (``serving.registry.model_facts`` builds on it).

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
