"""Alias moves that leave a history in the registry itself.

MLflow keeps no record of which version held an alias when, so every move made here also
writes one registered-model tag ``alias_history.<alias>.<time>.<nonce>`` holding the move
as JSON. One tag per move (not one growing tag) means two racing promotions both land in
the history, and the history travels with the registry to any tracking server.
"""

import getpass
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, fields

from mlflow.tracking import MlflowClient

from iris_core.contract import alias_history_key, alias_history_prefix
from iris_core.resolver import alias_version

_logger = logging.getLogger(__name__)


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


_MOVE_FIELDS = {f.name for f in fields(AliasMove)}


def current_user() -> str:
    """The tracking-server user when one is configured, else the local login.

    Containers often run under a uid with no passwd entry, where getpass raises; a move
    must not fail because its author has no name.
    """
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return os.environ["MLFLOW_TRACKING_USERNAME"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def move_alias(client: MlflowClient, name: str, alias: str, version: str, *, how: str, reason: str = "") -> AliasMove:
    """Point the alias at the version and record the move in the registry.

    The alias moves first: a move that happened but failed to be recorded is a gap the
    rollback logic tolerates, while a record of a move that never happened would mislead.
    """
    from_version = alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    move = AliasMove(
        alias=alias,
        from_version=from_version,
        to_version=str(version),
        at_ms=int(time.time() * 1000),
        by=current_user(),
        how=how,
        reason=reason,
    )
    key = alias_history_key(alias, move.at_ms, uuid.uuid4().hex[:8])
    client.set_registered_model_tag(name, key, json.dumps(move.as_dict(), sort_keys=True))
    _logger.info("%s@%s: %s -> %s (%s)", name, alias, from_version, version, how)
    return move


def parse_history(tags: dict[str, str], alias: str) -> list[AliasMove]:
    """The moves of the alias recorded in registered-model tags, newest first.

    A tag someone edited by hand into something unreadable is skipped with a warning
    rather than making the whole history (and every rollback) unusable.
    """
    prefix = alias_history_prefix(alias)
    moves = []
    for key, value in tags.items():
        if not key.startswith(prefix):
            continue
        try:
            record = json.loads(value)
            move = AliasMove(**{k: v for k, v in record.items() if k in _MOVE_FIELDS})
            moves.append((int(move.at_ms), key, move))
        except (ValueError, TypeError, AttributeError):
            _logger.warning("ignoring unreadable alias history tag %s", key)
    moves.sort(key=lambda item: item[:2], reverse=True)
    return [move for _, _, move in moves]


def alias_history(client: MlflowClient, name: str, alias: str) -> list[AliasMove]:
    """Every recorded move of the alias, newest first."""
    return parse_history(client.get_registered_model(name).tags, alias)


def rollback_target(history: list[AliasMove], current: str | None) -> str | None:
    """The version that held the alias before the current one, or None if there is none.

    Replays the history as a stack: a promotion pushes, a rollback pops back to its target,
    so repeated rollbacks walk further back (3 -> 2 -> 1) instead of bouncing between two.
    A rollback to a version that is not on the stack (``--to`` a version never live before)
    is pushed like a promotion, so the versions below it stay reachable.
    """
    stack: list[str] = []
    for move in reversed(history):
        if move.how == "rollback" and move.to_version in stack:
            while stack[-1] != move.to_version:
                stack.pop()
        elif not stack or stack[-1] != move.to_version:
            stack.append(move.to_version)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # moved outside these tools: treat it as the newest
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None
