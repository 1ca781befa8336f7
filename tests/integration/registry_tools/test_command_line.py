"""The command line as a user's shell runs it: ``python -m registry_tools`` in a real process."""

import os
import pty

import pytest

from tests.helpers.registry_checks import champion, start_cli, unchanged


def test_python_dash_m_registry_tools_help_lists_every_command():
    proc = start_cli("--help")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("Usage: python -m registry_tools [OPTIONS] COMMAND [ARGS]...")
    for command in ("list", "show", "promote", "rollback", "history"):
        assert f"\n  {command} " in out


def rollback_at_a_terminal(registry, answer: bytes) -> tuple[int, str, str]:
    """Run ``rollback`` with a pseudo-terminal as stdin and type the answer to its question."""
    controller, terminal = pty.openpty()
    try:
        proc = start_cli("--tracking-uri", registry.uri, "rollback", stdin=terminal)
        os.close(terminal)
        os.write(controller, answer)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(controller)
    return proc.returncode, out, err


@pytest.mark.parametrize("answer", [b"y\n", b"yes\n"])
def test_rollback_at_a_terminal_asks_first_and_moves_on_yes(registry, answer):
    code, out, err = rollback_at_a_terminal(registry, answer)
    assert code == 0, err
    assert out.startswith("Roll back iris@champion: version 2 -> version 1? [y/N]: ")
    assert "moved iris@champion: version 2 -> version 1 (rollback by " in out
    assert champion(registry.client()) == "1"


@pytest.mark.parametrize("answer", [b"n\n", b"\n"])
def test_rollback_at_a_terminal_changes_nothing_unless_confirmed(registry, answer):
    with unchanged(registry.client()):
        code, out, err = rollback_at_a_terminal(registry, answer)
    assert code == 1
    assert out.startswith("Roll back iris@champion: version 2 -> version 1? [y/N]: ")
    assert err == "error: rollback not confirmed; nothing changed\n"
