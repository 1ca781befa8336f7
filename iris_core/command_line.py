"""How every command line of the project starts and ends: logging, bounded retries, one ``error:`` line.

``run_command`` is the single place that maps outcomes to exit codes: a usage error exits
2, Ctrl-C 130, a project error its own code, and an MLflow or connection failure 1 with
the first meaningful line of its message. Nothing ends in a traceback.
"""

import logging
import sys
from typing import NoReturn

import click

from iris_core.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, IrisError
from iris_core.tracking import bound_http_retries, is_store_failure, one_line

_logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int | str = logging.INFO) -> None:
    """The one log format of the project's commands; urllib3's retry chatter is left out."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # urllib3 logs each bounded retry; an unreachable server is reported in one line instead.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def stacked(*options):
    """One decorator giving a command these click options, in this order (click applies its own bottom up)."""

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_command(command: click.Command, **main_args) -> NoReturn:
    """Run a click command to its exit code; every failure is one line on stderr.

    MLflow's HTTP retries are bounded first, so that an unreachable server fails in seconds.
    """
    bound_http_retries()
    try:
        result = command.main(standalone_mode=False, **main_args)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except IrisError as exc:
        fail(str(exc), exc.exit_code)
    except Exception as exc:
        if is_store_failure(exc):
            _logger.debug("failed", exc_info=True)
            fail(one_line(exc), EXIT_FAILURE)
        _logger.debug("unexpected failure", exc_info=True)
        fail(f"unexpected {type(exc).__name__}: {one_line(exc)}", EXIT_FAILURE)
    sys.exit(result if isinstance(result, int) else EXIT_OK)
