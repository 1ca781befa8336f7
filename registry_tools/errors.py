"""The one exception family of registry_tools, mapped to one-line messages and exit codes."""


class RegistryError(Exception):
    """An expected failure: the command line prints it in one line and exits 1."""

    exit_code = 1


class NotFound(RegistryError):
    """The model, version or alias does not exist."""


class Refused(RegistryError):
    """The operation would be unsafe and was not done (e.g. a version that failed its gate)."""
