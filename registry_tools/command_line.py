"""How every command line of the project ends: one ``error:`` line and an exit code, never a traceback."""

import sys
from typing import NoReturn

import click

from registry_tools.tracking import bound_http_retries


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_command(command: click.Command, expected: type[Exception], **main_args) -> None:
    """Usage errors exit 2, Ctrl-C 130, the command's own failures their exit code, each as one line.

    MLflow's HTTP retries are bounded first, so that an unreachable server fails in seconds.
    """
    bound_http_retries()
    try:
        command.main(standalone_mode=False, **main_args)
    except click.UsageError as exc:
        fail(exc.format_message(), 2)
    except click.Abort:
        sys.exit(130)
    except expected as exc:
        fail(str(exc), exc.exit_code)
