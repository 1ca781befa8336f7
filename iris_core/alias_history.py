"""Alias moves that leave a history in the registry itself, and a move made only if nobody made it first.

MLflow keeps no record of which version held an alias when, so every move made here also
writes one registered-model tag ``alias_history.<alias>.<time>.<nonce>`` holding the move
as JSON. One tag per move (not one growing tag) means two racing promotions both land in
the history, and the history travels with the registry to any tracking server.

The gate, the training step, ``registry_tools`` and the serving proxy's automatic
rollback all move aliases through this module, so ``registry_tools history`` and
``rollback`` read every move whoever made it. ``client`` is MLflow's ``MlflowClient`` or
any other ``iris_core.registry_client.RegistryClient`` (the serving proxy's speaks the REST
API of a tracking server), so the compare-and-set and the records it writes are the same
whoever moves; MLflow itself is never imported.
"""

import getpass
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, fields

from iris_core.contract import alias_claim_key, alias_history_key, alias_history_prefix
from iris_core.registry_client import RegistryClient
from iris_core.resolver import alias_version, get_model

_logger = logging.getLogger(__name__)

# How long a compare-and-set contender waits between writing its claim and reading it back:
# far longer than one registry write, so a contender that claims later sees the alias moved.
CLAIM_SETTLE_S = 1.0


@dataclass(frozen=True)
class AliasMove:
    """One change of an alias: from_version is None when the alias was new."""

    alias: str
    from_version: str | None
    to_version: str
    at_ms: int
    by: str
    how: str  # one of iris_core.contract.MoveKind
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


def move_alias(
    client: RegistryClient, name: str, alias: str, version: str, *, how: str, reason: str = "", by: str | None = None
) -> AliasMove:
    """Point the alias at the version and record the move in the registry.

    The alias moves first: a move that happened but failed to be recorded is a gap the
    rollback logic tolerates, while a record of a move that never happened would mislead.
    """
    return _move(client, name, alias, alias_version(client, name, alias), version, how, reason, by)


def move_alias_if(
    client: RegistryClient,
    name: str,
    alias: str,
    expected: str,
    version: str,
    *,
    how: str,
    reason: str = "",
    by: str | None = None,
    settle_s: float = CLAIM_SETTLE_S,
) -> AliasMove | None:
    """Move the alias to ``version`` only if it still points at ``expected``; None when it does not.

    The registry has no compare-and-set, so contenders (replicas that all decided to undo
    the same move) elect one: each writes its own nonce under one claim tag named after
    the alias and ``expected``, waits ``settle_s``, and reads the tag back. The last writer
    wins; every other contender reads a nonce not its own and stands down. The winner checks
    the alias once more (a contender that claimed after an earlier winner moved finds it
    moved) and moves it, then removes the claim. Removing is safe: whoever removes it has
    either moved the alias or seen that it no longer points at ``expected``. What remains is
    the one registry round trip between that last check and the move, during which a person's
    move would be overwritten (and both moves stay in the history).
    """
    if alias_version(client, name, alias) != str(expected):
        return None
    key, nonce = alias_claim_key(alias, str(expected)), uuid.uuid4().hex
    try:
        client.set_registered_model_tag(name, key, nonce)
    except Exception:  # a SQL store's upsert can lose an insert race to another contender: it is an update now
        client.set_registered_model_tag(name, key, nonce)
    time.sleep(settle_s)
    if get_model(client, name).tags.get(key) != nonce:
        _logger.info("%s@%s: another contender moves it from version %s", name, alias, expected)
        return None
    try:
        current = alias_version(client, name, alias)
        if current != str(expected):
            return None
        return _move(client, name, alias, current, version, how, reason, by)
    finally:
        try:
            client.delete_registered_model_tag(name, key)
        except Exception as exc:  # a claim left behind is overwritten by the next contender
            _logger.warning("could not remove the claim tag %s: %s", key, type(exc).__name__)


def _move(client, name, alias, from_version, version, how, reason, by) -> AliasMove:
    client.set_registered_model_alias(name, alias, str(version))
    move = AliasMove(
        alias=alias,
        from_version=from_version,
        to_version=str(version),
        at_ms=int(time.time() * 1000),
        by=by or current_user(),
        how=str(how),
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


def alias_history(client: RegistryClient, name: str, alias: str) -> list[AliasMove]:
    """Every recorded move of the alias, newest first."""
    return parse_history(get_model(client, name).tags, alias)
