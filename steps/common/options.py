"""Command-line options that several steps share, each declared once (as mlflow's ``cli_args`` does).

Defaults come from the settings classes in ``steps.common.config``, so a default is written in
one place only; ``main`` stacks the same options as the steps it runs.
"""

import functools

import click

from iris_core.command_line import stacked
from iris_core.refs import DEFAULT_MODEL_NAME
from steps.common.config import (
    DEFAULT_DATA_PATH,
    DEFAULT_LABEL,
    DEFAULT_STRICT,
    SOLVERS,
    CycleSettings,
    DriftThresholds,
    GateThresholds,
    PerformanceThresholds,
    TrainConfig,
)


def _settings(settings: type, into: str, **helps: str | None):
    """Options for the fields of a settings class that ``helps`` names, in its order, handed to the command as one
    object: the parameter ``into``, already ``validated()`` (exit 2 on a bad value before the command's body runs).

    Each option is the field's name as a flag (``min_rows``: ``--min-rows``), with the field's default and that
    default's type, so a setting is written once, in ``steps.common.config``.
    """

    def decorate(function):
        @functools.wraps(function)
        def command(*args, **kwargs):
            kwargs[into] = settings(**{name: kwargs.pop(name) for name in helps}).validated()
            return function(*args, **kwargs)

        return stacked(*(_setting(settings, name, help) for name, help in helps.items()))(command)

    return decorate


def _setting(settings: type, name: str, help: str | None):
    default = getattr(settings, name)
    flag = "--" + name.replace("_", "-")
    return click.option(flag, name, type=type(default), default=default, show_default=True, help=help)


data_path = click.option(
    "--data-path",
    default=DEFAULT_DATA_PATH,
    show_default=True,
    help="The table (CSV): a header row, one column per feature and the label column. The Iris table falls back "
    "to scikit-learn's copy.",
)
label = click.option(
    "--label",
    default=DEFAULT_LABEL,
    show_default=True,
    help="The table's label column; every other column is a feature. A written --contract that names its label "
    "needs none.",
)
contract = click.option(
    "--contract",
    default="",
    help="A table contract a person wrote (YAML or JSON): it pins the features, their types and hard rules, the "
    "label and classes, which training would otherwise infer from the table.",
)
# `--strict` alone, or `--strict true|false` as an MLproject command passes it.
strict = click.option(
    "--strict",
    type=click.BOOL,
    is_flag=False,
    flag_value=True,
    default=DEFAULT_STRICT,
    show_default=True,
    help="Fail (exit 1) on an Iris CSV that is missing or fails a check, instead of falling back to scikit-learn's "
    "copy (any other table always fails).",
)
model_name = click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True, help="Registered model.")

# The table a step trains on: where it is, its label, and the contract it is checked against.
table = stacked(data_path, label, contract)

training = _settings(
    TrainConfig,
    "config",
    max_iter=None,
    C="Inverse regularisation strength.",
    solver=f"One of {', '.join(SOLVERS)}.",
    test_size=None,
    random_state=None,
)

gate = _settings(
    GateThresholds,
    "gate_thresholds",
    min_accuracy=None,
    max_regression="Largest allowed drop in accuracy or f1 against the champion.",
    min_shadow_rows="Rows a serving proxy must have shadowed against the champion first (0: no shadow rule).",
    min_shadow_agreement="Share of the shadowed rows where the challenger must have given the champion's class.",
    below_floor_alpha="When the champion is below --min-accuracy too: a challenger below it passes if significantly "
    "better on the same rows by McNemar's exact test at this level (verdict promoted_below_floor, exit 4; 0: off).",
)

predictions = click.option(
    "--predictions",
    required=True,
    help="The proxy's capture (its --capture-uri: mlflow-artifacts:/..., s3://..., gs://..., a directory), or its "
    "JSON-lines prediction log, or a directory: every predictions.jsonl beneath it (one per replica).",
)
feedback = click.option(
    "--feedback",
    default="",
    help="The capture again (for its labels), or the proxy's JSON-lines feedback log (true labels), or a directory "
    "of them; joined with the predictions. Optional.",
)
# The part of a capture a step reads; strings, since MLflow passes every parameter as one.
window = stacked(
    click.option(
        "--since",
        default="",
        help="Read the capture's predictions from this time on (ISO 8601, UTC unless it says otherwise, e.g. "
        "2026-12-06T21:00); only the partitions of the window are read.",
    ),
    click.option("--until", default="", help="... and before this time (now by default)."),
    click.option("--hours", default="", help="... or the last N hours (before --until, or now)."),
)
# What a step reads of live traffic: the predictions, their labels, and the window of a capture.
live_traffic = stacked(predictions, feedback, window)

drift = _settings(
    DriftThresholds,
    "drift_thresholds",
    alpha="Significance level of the KS and chi-square tests.",
    psi_threshold="PSI from which a significant feature shift counts as drift.",
    class_shift="Total variation of the predicted-class mix from which a significant shift counts as drift.",
    min_rows="Fewer rows give no drift verdict (exit 0).",
)

live_performance = _settings(
    PerformanceThresholds,
    "performance_thresholds",
    min_live_accuracy="Live accuracy on labeled rows below this is a performance drop.",
    min_labeled_rows="Fewer labeled rows give no performance verdict.",
)

cooldown = _settings(
    CycleSettings,
    "cycle_settings",
    cooldown_hours="No retrain within this many hours of the last one (recorded in the registry); 0: no cooldown.",
)
