"""Assertions and registry reads shared by the registry_tools tests."""

import contextlib
import itertools
import subprocess
import sys

from click.testing import Result

from tests.helpers.tracking import REPO

_copies = itertools.count(1)


def state(client, name: str = "iris") -> dict:
    """Everything a registry_tools command may change: aliases, model tags (the history), version tags."""
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "aliases": {alias: str(version) for alias, version in model.aliases.items()},
        "model_tags": dict(model.tags),
        "version_tags": {str(v.version): dict(v.tags) for v in versions},
    }


@contextlib.contextmanager
def unchanged(client, name: str = "iris"):
    """Asserts that the block leaves aliases, history and version tags exactly as they were."""
    before = state(client, name)
    yield
    assert state(client, name) == before


def champion(client, name: str = "iris") -> str | None:
    aliases = client.get_registered_model(name).aliases
    return str(aliases["champion"]) if "champion" in aliases else None


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    """A failure as promised: the exit code, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def start_cli(*args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """``python -m registry_tools ARGS`` in its own process, from the repository root."""
    return subprocess.Popen(
        [sys.executable, "-m", "registry_tools", *args],
        cwd=REPO,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fresh_copy(client, name: str = "iris") -> str:
    """A new registered model copied from ``name``: its versions in order, its aliases and its tags (which hold
    the alias history); its name is returned, so that a test may move it freely."""
    copy = f"{name}-copy-{next(_copies)}"
    source = client.get_registered_model(name)
    for version in sorted((v.version for v in client.search_model_versions(f"name = '{name}'")), key=int):
        client.copy_model_version(f"models:/{name}/{version}", copy)
    for alias, version in source.aliases.items():
        client.set_registered_model_alias(copy, alias, str(version))
    for key, value in source.tags.items():
        client.set_registered_model_tag(copy, key, value)
    return copy
