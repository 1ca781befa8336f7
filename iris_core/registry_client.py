"""What the core's registry logic asks of a client: MLflow's ``MlflowClient``, or one that speaks MLflow's REST API.

The resolver (``iris_core.resolver``) and the alias history (``iris_core.alias_history``)
call only the methods below, so their logic, written once, runs over MLflow's own client
in the tools and the steps, and over a tracking server's REST API in the serving proxy,
which then never imports MLflow (``serving.registry.rest``). A client that is not MLflow's
reports an error answer of the registry as ``RegistryApiError`` carrying MLflow's error
code, and the resolver reads that code exactly as it reads an ``MlflowException``'s.
"""

from typing import Protocol


class RegisteredModelView(Protocol):
    """The parts of MLflow's ``RegisteredModel`` the core reads."""

    name: str
    aliases: dict  # alias -> version
    tags: dict[str, str]


class ModelVersionView(Protocol):
    """The parts of MLflow's ``ModelVersion`` the core reads."""

    version: str
    run_id: str | None
    tags: dict[str, str]


class ArtifactView(Protocol):
    """The parts of MLflow's ``FileInfo`` the core reads: a path relative to the run's artifact root."""

    path: str


class RegistryClient(Protocol):
    """The calls of ``MlflowClient`` the core makes, with MLflow's names and arguments.

    Runs and their artifacts are there for ``runs:/`` model URIs, which name no registered version.
    """

    def get_registered_model(self, name: str) -> RegisteredModelView: ...

    def get_model_version(self, name: str, version: str) -> ModelVersionView: ...

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None: ...

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None: ...

    def delete_registered_model_tag(self, name: str, key: str) -> None: ...

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None: ...

    def get_run(self, run_id: str) -> object: ...

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[ArtifactView]: ...


class RegistryApiError(Exception):
    """The registry answered with an error: MLflow's ``error_code`` (``RESOURCE_DOES_NOT_EXIST``...) and its message.

    Raised by clients other than MLflow's where MLflow's raises ``MlflowException``; its
    text reads as MLflow's does (``CODE: message``).
    """

    def __init__(self, error_code: str, message: str):
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = f"{error_code}: {message}"
