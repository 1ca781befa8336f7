"""The registry_tools tests' fixtures, used by the in-process and the real-process ones alike: a CliRunner, bounded HTTP settings.

Each registry_tools test folder's conftest.py imports them, so that the autouse one applies there only.
"""

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
