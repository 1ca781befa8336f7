"""The registry resolver: which version a model reference names now, and why not when it names none.

Every tool asks the registry the same questions (does the model exist, where does the
alias point, does the version exist), and each must tell "the registry says it is not
there" (``NotFound``) from "the registry could not be asked" (``RegistryUnavailable``: an
unreachable server, refused credentials, a failing store). The difference is read from
MLflow's error codes, never from its message text. ``client`` is MLflow's ``MlflowClient``
or any other ``iris_core.registry_client.RegistryClient``; this module never imports MLflow.
"""

import contextlib
from dataclasses import dataclass

from iris_core.errors import NotFound, RegistryUnavailable
from iris_core.refs import ModelRef, Ref, RunModelRef
from iris_core.registry_client import RegistryClient
from iris_core.tracking import is_store_failure, one_line

_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True)
class Resolved:
    """A concrete model version, as the registry named it."""

    version: str
    run_id: str | None = None


@contextlib.contextmanager
def _asking(missing: str | None = None, message: str = ""):
    """The registry's "does not exist" becomes NotFound(message); any other failure RegistryUnavailable.

    Both MLflow's ``MlflowException`` and ``RegistryApiError`` carry MLflow's error code.
    """
    try:
        yield
    except Exception as exc:
        if not is_store_failure(exc):
            raise
        if missing is not None and getattr(exc, "error_code", None) == _DOES_NOT_EXIST:
            raise NotFound(message, missing) from None
        raise RegistryUnavailable(one_line(exc)) from None


def get_model(client: RegistryClient, name: str):
    """The registered model (with its aliases and tags), or NotFound naming it."""
    with _asking("model", f"no registered model named {name!r}"):
        return client.get_registered_model(name)


def find_version(client: RegistryClient, model, ref: Ref):
    """The ``ModelVersion`` of a registered model that a Ref names, or NotFound saying which part is missing."""
    name = model.name
    if ref.alias is not None:
        if ref.alias not in model.aliases:
            known = ", ".join(f"@{a}" for a in sorted(model.aliases)) or "none"
            raise NotFound(f"{name} has no alias @{ref.alias} (aliases: {known})", "alias")
        version = str(model.aliases[ref.alias])
    else:
        version = ref.version
    with _asking("version", f"{name} has no version {version}"):
        return client.get_model_version(name, version)


def alias_version(client: RegistryClient, name: str, alias: str) -> str | None:
    """The version number the alias points to, or None when the alias is not set."""
    aliases = get_model(client, name).aliases
    return str(aliases[alias]) if alias in aliases else None


def resolve(client: RegistryClient, model_ref: ModelRef | RunModelRef) -> Resolved:
    """The version a ``models:/`` reference names now (a ``runs:/`` one: its label), with the run that made it."""
    if isinstance(model_ref, RunModelRef):
        return resolve_run_model(client, model_ref)
    version = find_version(client, get_model(client, model_ref.name), model_ref.ref)
    return Resolved(str(version.version), version.run_id)


def resolve_run_model(client: RegistryClient, ref: RunModelRef) -> Resolved:
    """A ``runs:/`` model, checked to exist: the run, and an ``MLmodel`` at its artifact path."""
    with _asking("run", f"no run with ID {ref.run_id}"):
        client.get_run(ref.run_id)
    with _asking():
        files = client.list_artifacts(ref.run_id, ref.artifact_path)
    if not any(f.path.rsplit("/", 1)[-1] == "MLmodel" for f in files):
        raise NotFound(f"run {ref.run_id} logged no model at {ref.artifact_path!r}", "model")
    return Resolved(ref.label, ref.run_id)
