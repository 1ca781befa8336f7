"""Which version a rollback returns to, read from the alias history that ``iris_core.alias_history`` keeps."""

from iris_core.alias_history import AliasMove
from iris_core.contract import MoveKind


def rollback_target(history: list[AliasMove], current: str | None) -> str | None:
    """The version that held the alias before the current one, or None if there is none.

    Replays the history as a stack: a promotion pushes, a rollback (a person's or a serving
    proxy's automatic one) pops back to its target, so repeated rollbacks walk further back
    (3 -> 2 -> 1) instead of bouncing between two. A rollback to a version that is not on the
    stack (``--to`` a version never live before) is pushed like a promotion, so the versions
    below it stay reachable.
    """
    rollbacks = {kind.value for kind in MoveKind if kind.is_rollback}
    stack: list[str] = []
    for move in reversed(history):
        if move.how in rollbacks and move.to_version in stack:
            while stack[-1] != move.to_version:
                stack.pop()
        elif not stack or stack[-1] != move.to_version:
            stack.append(move.to_version)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # moved outside these tools: treat it as the newest
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None
