"""Fixtures of the registry_tools tests: a CliRunner, the registry's state, bounded HTTP settings."""

from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result

from iris_core.tracking import HTTP_DEFAULTS


@pytest.fixture(autouse=True)
def bounded_http(monkeypatch):
    """The CLI sets these in os.environ at start; setting them here first undoes that after the test."""
    for key, value in HTTP_DEFAULTS.items():
        monkeypatch.setenv(key, value)


@dataclass
class Cli:
    """Runs ``registry_tools`` in process, the way a user's shell would (no terminal attached)."""

    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None) -> Result:
        from registry_tools.cli import cli

        return self.runner.invoke(cli, list(args), input=input, prog_name="registry_tools")


@pytest.fixture
def run():
    return Cli(CliRunner())
