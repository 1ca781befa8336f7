"""The one exception family of the pipeline steps.

Entry points turn these into a one-line message and exit code 1; anything else is a bug
and keeps its traceback.
"""


class StepError(Exception):
    """An expected failure of a step, reported to the user in one line."""

    exit_code = 1


class InvalidParameter(StepError):
    """A parameter value MLflow passed through unchecked (it checks only path and uri types)."""

    exit_code = 2


class DataValidationError(StepError):
    """The data failed a check; the message names the check."""


class GateFailed(StepError):
    """The challenger did not pass the promotion gate."""
