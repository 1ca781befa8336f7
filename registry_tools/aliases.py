"""Alias moves that leave a history in the registry itself.

MLflow keeps no record of which version held an alias when, so every move made here also
writes one registered-model tag ``alias_history.<alias>.<time>.<nonce>`` holding the move
as JSON. One tag per move (not one growing tag) means two racing promotions both land in
the history, and the history travels with the registry to any tracking server.
"""

import getpass
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

HISTORY_PREFIX = "alias_history"


@dataclass(frozen=True)
class AliasMove:
    """One change of an alias: from_version is None when the alias was new."""

    alias: str
    from_version: str | None
    to_version: str
    at_ms: int
    by: str
    how: str  # gate, train, promote, rollback
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def current_user() -> str:
    """The tracking-server user when one is configured, else the local login."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version number the alias points to, or None when the alias is not set."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        message = str(exc).lower()
        if "alias" in message and ("not found" in message or "does not exist" in message):
            return None
        raise


def move_alias(
    client: MlflowClient, name: str, alias: str, version: str, *, how: str, reason: str = ""
) -> AliasMove:
    """Point the alias at the version and record the move in the registry."""
    move = AliasMove(
        alias=alias,
        from_version=alias_version(client, name, alias),
        to_version=str(version),
        at_ms=int(time.time() * 1000),
        by=current_user(),
        how=how,
        reason=reason,
    )
    client.set_registered_model_alias(name, alias, str(version))
    key = f"{HISTORY_PREFIX}.{alias}.{move.at_ms:013d}.{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(name, key, json.dumps(move.as_dict(), sort_keys=True))
    return move


def alias_history(client: MlflowClient, name: str, alias: str) -> list[AliasMove]:
    """Every recorded move of the alias, newest first."""
    tags = client.get_registered_model(name).tags
    prefix = f"{HISTORY_PREFIX}.{alias}."
    moves = [(key, json.loads(value)) for key, value in tags.items() if key.startswith(prefix)]
    moves.sort(key=lambda item: (item[1]["at_ms"], item[0]), reverse=True)
    return [AliasMove(**fields) for _, fields in moves]


def rollback_target(history: list[AliasMove], current: str | None) -> str | None:
    """The version that held the alias before the current one, or None if there is none.

    Replays the history as a stack: a promotion pushes, a rollback pops back to its target,
    so repeated rollbacks walk further back (3 -> 2 -> 1) instead of bouncing between two.
    """
    stack: list[str] = []
    for move in reversed(history):
        if move.how == "rollback":
            while stack and stack[-1] != move.to_version:
                stack.pop()
            if not stack:
                stack.append(move.to_version)
        else:
            stack.append(move.to_version)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # moved outside these tools: treat it as the newest
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None
