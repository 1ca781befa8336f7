"""Model references: what a user may write for a model, a version, an alias or a run's model, checked before MLflow is imported.

The rules are MLflow's own (alias names: letters, digits, ``_`` and ``-``, at most 255,
not ``latest`` and not ``v<number>``), applied here so a typo is a usage error (exit 2)
instead of a server round trip.
"""

import re
from dataclasses import dataclass

DEFAULT_MODEL_NAME = "iris"
CHAMPION = "champion"  # the version that serves
CHALLENGER = "challenger"  # the newest trained version, waiting for the gate

_VERSION = re.compile(r"^0*(?P<version>[1-9]\d{0,17})$")
_ALIAS = re.compile(r"^[\w-]{1,255}$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")
MODEL_URI_FORM = "models:/<name>@<alias> or models:/<name>/<version>"
# A run's logged model: the run ID MLflow makes (hex) and a relative artifact path.
_RUN_MODEL_URI = re.compile(r"runs:/(?P<run_id>[0-9a-f]{8,64})/(?P<path>[\w.-]+(?:/[\w.-]+)*)")
RUN_MODEL_URI_FORM = "runs:/<run_id>/<artifact_path>"


@dataclass(frozen=True)
class Ref:
    """A version of a known model named by number or by alias; exactly one of the two is set."""

    version: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class ModelRef:
    """What a ``models:/`` URI names: a registered model and either an alias or a fixed version."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def ref(self) -> Ref:
        return Ref(version=self.version, alias=self.alias)

    @property
    def uri(self) -> str:
        return alias_uri(self.name, self.alias) if self.alias else version_uri(self.name, self.version)

    def version_uri(self, version: str) -> str:
        return version_uri(self.name, version)


@dataclass(frozen=True)
class RunModelRef:
    """What a ``runs:/<run_id>/<path>`` URI names: a model a run logged, registered or not.

    It has no registered name, alias or version: ``label`` (``run-<run_id>``) stands in for
    the name and the version wherever they are shown (``X-Model-Version``, ``/health``,
    ``/metrics``, the prediction log, the Open Inference Protocol's paths), so its traffic
    is never counted as some registered version's.
    """

    run_id: str
    artifact_path: str
    alias = None
    version = None

    @property
    def name(self) -> str:
        return self.label

    @property
    def uri(self) -> str:
        return f"runs:/{self.run_id}/{self.artifact_path}"

    @property
    def label(self) -> str:
        return f"run-{self.run_id}"

    def version_uri(self, version: str) -> str:
        return self.uri


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def alias_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def check_alias(name: str) -> str:
    """The alias name, or ValueError saying why it cannot be one."""
    if not _ALIAS.match(name) or _RESERVED_ALIAS.match(name):
        raise ValueError(f"{name!r} is not a usable alias (letters, digits, _ and -; not 'latest' or vN)")
    return name


def parse_ref(text: str) -> Ref:
    """``3`` or ``@champion``; anything else is a ValueError."""
    text = text.strip()
    if match := _VERSION.match(text):
        return Ref(version=match.group("version"))
    if text.startswith("@"):
        try:
            return Ref(alias=check_alias(text[1:]))
        except ValueError:
            pass
    raise ValueError(f"{text!r} is neither a version number nor @alias")


def is_registry_uri(uri: str) -> bool:
    """A ``models:/`` URI names the registry; ``runs:/`` and paths name artifacts directly."""
    return uri.startswith("models:/")


def parse_model_uri(uri: str) -> ModelRef:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>``; anything else is a ValueError."""
    match = _MODEL_URI.fullmatch(uri.strip())
    if not match:
        raise ValueError(f"model URI must look like {MODEL_URI_FORM}, got {uri!r}")
    return ModelRef(match["name"], match["alias"], match["version"])


def parse_run_model_uri(uri: str) -> RunModelRef:
    """``runs:/<run_id>/<artifact_path>``; anything else (``..`` in the path included) is a ValueError."""
    match = _RUN_MODEL_URI.fullmatch(uri.strip())
    if not match or any(part in (".", "..") for part in match["path"].split("/")):
        raise ValueError(f"model URI must look like {RUN_MODEL_URI_FORM}, got {uri!r}")
    return RunModelRef(match["run_id"], match["path"])


def parse_registry_or_run_uri(uri: str) -> ModelRef | RunModelRef:
    """A registry reference, or a run's logged model (``runs:/``, served as is before it is registered)."""
    return parse_run_model_uri(uri) if uri.strip().startswith("runs:/") else parse_model_uri(uri)
