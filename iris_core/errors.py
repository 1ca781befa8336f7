"""The one error family of the project, and the exit codes every command line ends with.

Each package derives its own errors from ``IrisError``; the command-line runner
(``iris_core.command_line``) turns any of them into one ``error:`` line and its exit code.
"""

EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed: a refused promotion, a missing version, drift
EXIT_USAGE = 2  # the command line cannot work as written
EXIT_WAITING = 3  # nothing failed, the evidence asked for is not there yet: run it again later
EXIT_REVIEW = 4  # done, and a person should look: the gate promoted a version below its floor
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class IrisError(Exception):
    """An expected failure, reported to the user in one line."""

    exit_code = EXIT_FAILURE


class NotFound(IrisError):
    """The registry answered, and the model, alias or version it was asked for is not there.

    ``missing`` says which: "model", "alias", "version" or "run".
    """

    def __init__(self, message: str, missing: str):
        super().__init__(message)
        self.missing = missing


class RegistryUnavailable(IrisError):
    """The registry could not be asked: unreachable, refused the credentials, or failed."""
