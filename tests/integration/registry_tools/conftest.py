"""The registry_tools fixtures (``tests.helpers.registry_cli``): a CliRunner, bounded HTTP settings for every test here."""

from tests.helpers.registry_cli import bounded_http, run

__all__ = ["bounded_http", "run"]
