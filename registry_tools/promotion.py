"""Promotion and rollback as plans: worked out and checked first, then shown, then applied.

Separating the plan from the move is what makes ``--dry-run`` and the confirmation
prompt say exactly what would happen, and lets every refusal happen before anything
in the registry changes.
"""

from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from iris_core.alias_history import AliasMove, move_alias, parse_history
from iris_core.contract import GateVerdict, Tag, split_reasons
from iris_core.errors import NotFound
from iris_core.refs import Ref, version_uri
from iris_core.resolver import find_version, get_model
from registry_tools.aliases import rollback_target
from registry_tools.errors import Refused

PROMOTABLE = frozenset(verdict.value for verdict in GateVerdict if verdict.promotes)


@dataclass(frozen=True)
class Plan:
    """One intended alias move; ``from_version`` is None when the alias is not set yet."""

    model_name: str
    alias: str
    from_version: str | None
    to_version: str
    how: str  # promote or rollback
    reason: str = ""

    @property
    def changes_nothing(self) -> bool:
        return self.from_version == self.to_version

    def describe(self) -> str:
        was = f"version {self.from_version}" if self.from_version else "unset"
        return f"{self.model_name}@{self.alias}: {was} -> version {self.to_version}"


def check_promotable(version: ModelVersion, force: bool) -> None:
    """Refuse a version that is not ready; unless forced, one whose gate failed or that never met it."""
    if str(version.status) != "READY":
        raise Refused(f"version {version.version} is not ready to serve (status {version.status})")
    if force:
        return
    tags = version.tags or {}
    decision = tags.get(Tag.GATE_DECISION)
    if decision == GateVerdict.FAILED:
        reasons = split_reasons(tags.get(Tag.GATE_REASONS))
        detail = f" ({reasons[0]})" if reasons else ""
        raise Refused(f"version {version.version} failed its gate{detail}; pass --force to move the alias anyway")
    if decision not in PROMOTABLE:
        raise Refused(
            f"version {version.version} was never evaluated (no gate decision): run the evaluate step on "
            f"{version_uri(version.name, str(version.version))} first, or pass --force to move the alias anyway"
        )


def plan_promotion(
    client: MlflowClient, name: str, ref: Ref, alias: str, *, reason: str = "", force: bool = False
) -> Plan:
    """Point the alias at the version a Ref names, if that version may be served."""
    model = get_model(client, name)
    version = find_version(client, model, ref)
    current = _alias_target(model.aliases, alias)
    if current != str(version.version):
        check_promotable(version, force)
    return Plan(name, alias, current, str(version.version), "promote", reason)


def plan_rollback(
    client: MlflowClient, name: str, alias: str, *, to: Ref | None = None, reason: str = "", force: bool = False
) -> Plan:
    """Move the alias back to the version that held it before (per its history), or to ``to``.

    The gate is checked only for ``to``: a version from the history was live before, even
    if someone forced it there, and returning to it is what a rollback is for.
    """
    model = get_model(client, name)
    current = _alias_target(model.aliases, alias)
    if to is not None:
        version = find_version(client, model, to)
        if current != str(version.version):
            check_promotable(version, force)
        return Plan(name, alias, current, str(version.version), "rollback", reason)
    history = parse_history(model.tags, alias)
    target = rollback_target(history, current)
    if target is None:
        if current is None:
            raise NotFound(f"{name} has no alias @{alias} and no recorded moves of it", "alias")
        raise Refused(f"no earlier version of @{alias} to roll back to (it is on version {current}); nothing changed")
    try:
        find_version(client, model, Ref(version=target))
    except NotFound:
        raise Refused(f"version {target}, which held @{alias} before, no longer exists; choose one with --to") from None
    return Plan(name, alias, current, target, "rollback", reason)


def apply(client: MlflowClient, plan: Plan) -> AliasMove:
    """Make the move and record it in the alias history."""
    return move_alias(client, plan.model_name, plan.alias, plan.to_version, how=plan.how, reason=plan.reason)


def _alias_target(aliases: dict, alias: str) -> str | None:
    return str(aliases[alias]) if alias in aliases else None
