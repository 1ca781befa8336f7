"""The serving proxy's errors.

``ServingError`` and ``ConfigError`` end the command line in one line (exit 1 and 2).
``HttpError`` is every answer the proxy refuses or fails with: it carries the HTTP status,
a stable ``error_code``, one sentence, a few specifics and any headers, and the app turns
it into the short JSON body ``{"error_code", "message", "details"}``.
"""

import logging
import traceback

from iris_core.errors import EXIT_USAGE, IrisError

MAX_DETAILS = 10


class ServingError(IrisError):
    """An expected failure of the proxy, reported to the user in one line."""


class ConfigError(ServingError):
    """A setting that cannot work: a usage error."""

    exit_code = EXIT_USAGE


class HttpError(ServingError):
    """An answer other than 200: status, error code, message, details (never the request's content), headers."""

    def __init__(self, status: int, error_code: str, message: str, details=(), headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = [shorten(str(d), 200) for d in list(details)[:MAX_DETAILS]]
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error_code": self.error_code, "message": self.message, "details": self.details}


def shorten(text: str, limit: int) -> str:
    """Client-supplied names can be long; an error shows at most ``limit`` characters of one."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def log_failure(logger: logging.Logger, what: str, exc: Exception) -> None:
    """A bug of ours, with its traceback's frames but not its message, which may quote the request."""
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    logger.error("%s failed: %s (message withheld)\n%s", what, type(exc).__name__, frames)
