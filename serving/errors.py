"""The one exception family of the serving proxy.

The command line turns ``ServingError`` into one line and its exit code; the HTTP layer
turns ``ValidationError`` and ``UpstreamError`` (both subclasses) into JSON error bodies.
"""


class ServingError(Exception):
    """An expected failure, reported to the user in one line."""

    exit_code = 1


class ConfigError(ServingError):
    """A setting that cannot work: a usage error."""

    exit_code = 2
