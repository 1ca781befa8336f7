"""Reading model versions: resolving ``3`` or ``@champion`` and summarising what the pipeline recorded.

The pipeline writes its facts as model-version tags (gate decision and reasons, held-out
metrics, data source, training run), so a listing needs one registry call per page of
versions; the training run is fetched only for versions that were never evaluated, or
when one version is shown in full.
"""

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from iris_core.contract import Tag, split_reasons
from iris_core.refs import Ref, version_uri
from iris_core.resolver import find_version, get_model
from registry_tools.errors import RegistryError

_logger = logging.getLogger(__name__)

PAGE_SIZE = 1000


@dataclass(frozen=True)
class VersionSummary:
    """One version as ``list`` and ``show`` present it; metrics are None when nothing recorded them."""

    name: str
    version: str
    aliases: list[str]
    created_ms: int
    status: str
    run_id: str | None
    source: str
    gate_decision: str | None
    gate_reasons: list[str]
    accuracy: float | None
    f1_score: float | None
    metrics_from: str | None  # "evaluation" (held-out, by the gate) or "training" (the training run)
    data_source: str | None
    evaluation_run_id: str | None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    training_metrics: dict[str, float] | None = None  # None: not fetched (``list`` reads no runs it does not need)

    @property
    def created(self) -> str:
        return utc_time(self.created_ms)

    @property
    def model_uri(self) -> str:
        return version_uri(self.name, self.version)

    def as_dict(self) -> dict:
        """Every field, except ``training_metrics`` when it was not fetched: an empty dict would claim there are none."""
        fields = {**asdict(self), "created": self.created, "model_uri": self.model_uri}
        if self.training_metrics is None:
            del fields["training_metrics"]
        return fields


def utc_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def aliases_by_version(model: RegisteredModel) -> dict[str, list[str]]:
    """Search results may leave aliases out, so they come from the registered model instead."""
    found: dict[str, list[str]] = {}
    for alias, version in sorted(model.aliases.items()):
        found.setdefault(str(version), []).append(alias)
    return found


def all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of the model, following the search's pages."""
    if "'" in name and '"' in name:
        raise RegistryError(f"model name {name!r} mixes both quote characters and cannot be searched")
    quote = '"' if "'" in name else "'"
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = {quote}{name}{quote}", max_results=PAGE_SIZE, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return sorted(versions, key=lambda v: int(v.version), reverse=True)


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def training_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    """The training run's metrics; empty when the run is gone (deleted, or in another store)."""
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.metrics)
    except MlflowException as exc:
        _logger.warning("cannot read run %s: %s", run_id, str(exc).splitlines()[0])
        return {}


def summarise(client: MlflowClient, version: ModelVersion, aliases: list[str], *, full: bool = False) -> VersionSummary:
    """A VersionSummary; ``full`` adds the training run's metrics (one more registry call per version)."""
    tags = dict(version.tags or {})
    accuracy, f1 = _float(tags.get(Tag.EVAL_ACCURACY)), _float(tags.get(Tag.EVAL_F1_SCORE))
    metrics_from = "evaluation" if accuracy is not None else None
    run_metrics = training_metrics(client, version.run_id) if full or accuracy is None else {}
    if accuracy is None and "accuracy" in run_metrics:
        accuracy, f1, metrics_from = run_metrics["accuracy"], run_metrics.get("f1_score"), "training"
    return VersionSummary(
        name=version.name,
        version=str(version.version),
        aliases=aliases,
        created_ms=version.creation_timestamp,
        status=str(version.status),
        run_id=version.run_id,
        source=version.source,
        gate_decision=tags.get(Tag.GATE_DECISION),
        gate_reasons=split_reasons(tags.get(Tag.GATE_REASONS)),
        accuracy=accuracy,
        f1_score=f1,
        metrics_from=metrics_from,
        data_source=tags.get(Tag.DATA_SOURCE),
        evaluation_run_id=tags.get(Tag.EVALUATION_RUN_ID),
        description=version.description or "",
        tags=tags,
        training_metrics=run_metrics if full else None,
    )


def list_versions(client: MlflowClient, name: str) -> list[VersionSummary]:
    """Every version of the model, newest first."""
    by_version = aliases_by_version(get_model(client, name))
    return [summarise(client, v, by_version.get(str(v.version), [])) for v in all_versions(client, name)]


def show_version(client: MlflowClient, name: str, ref: Ref) -> VersionSummary:
    """Everything recorded about one version."""
    model = get_model(client, name)
    version = find_version(client, model, ref)
    by_version = aliases_by_version(model)
    return summarise(client, version, by_version.get(str(version.version), []), full=True)
