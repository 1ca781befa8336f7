"""The pipeline steps' errors, all ``IrisError``s: the command-line runner prints one line and exits with their code."""

from iris_core.errors import EXIT_USAGE, EXIT_WAITING, IrisError


class StepError(IrisError):
    """An expected failure of a step (exit 1)."""


class InvalidParameter(StepError):
    """A parameter value MLflow passed through unchecked (it checks only path and uri types)."""

    exit_code = EXIT_USAGE


class DataValidationError(StepError):
    """The data failed a check; the message names the check."""


class GateFailed(StepError):
    """The challenger did not pass the promotion gate."""


class GateWaiting(StepError):
    """The gate needs shadow evidence that does not exist yet: a scheduler runs it again later (exit 3)."""

    exit_code = EXIT_WAITING


class DriftDetected(StepError):
    """Live traffic drifted past the thresholds: exit 1 so that a scheduler can react."""


class PerformanceDropped(StepError):
    """Live accuracy on labeled rows fell below the floor: exit 1 so that a scheduler can react."""
