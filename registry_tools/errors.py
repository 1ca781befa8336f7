"""registry_tools' own errors; ``iris_core.errors.NotFound`` says what the registry does not hold."""

from iris_core.errors import IrisError


class RegistryError(IrisError):
    """An expected failure of a registry command (exit 1)."""


class Refused(RegistryError):
    """The operation would be unsafe and was not done (e.g. a version that failed its gate)."""
