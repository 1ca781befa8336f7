"""Command-line options that several steps share, each declared once (as mlflow's ``cli_args`` does).

Defaults come from the settings classes in ``steps.common.config``, so a default is written in
one place only; ``main`` stacks the same options as the steps it runs.
"""

import click

from iris_core.refs import DEFAULT_MODEL_NAME
from steps.common.config import (
    DEFAULT_DATA_PATH,
    DEFAULT_LABEL,
    DEFAULT_STRICT,
    SOLVERS,
    DriftThresholds,
    GateThresholds,
    PerformanceThresholds,
    TrainConfig,
)


def _stack(*options):
    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


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
table = _stack(data_path, label, contract)

training = _stack(
    click.option("--max-iter", type=int, default=TrainConfig.max_iter, show_default=True),
    click.option(
        "--C", "C", type=float, default=TrainConfig.C, show_default=True, help="Inverse regularisation strength."
    ),
    click.option("--solver", default=TrainConfig.solver, show_default=True, help=f"One of {', '.join(SOLVERS)}."),
    click.option("--test-size", type=float, default=TrainConfig.test_size, show_default=True),
    click.option("--random-state", type=int, default=TrainConfig.random_state, show_default=True),
)

gate = _stack(
    click.option("--min-accuracy", type=float, default=GateThresholds.min_accuracy, show_default=True),
    click.option(
        "--max-regression",
        type=float,
        default=GateThresholds.max_regression,
        show_default=True,
        help="Largest allowed drop in accuracy or f1 against the champion.",
    ),
    click.option(
        "--min-shadow-rows",
        type=int,
        default=GateThresholds.min_shadow_rows,
        show_default=True,
        help="Rows a serving proxy must have shadowed against the champion first (0: no shadow rule).",
    ),
    click.option(
        "--min-shadow-agreement",
        type=float,
        default=GateThresholds.min_shadow_agreement,
        show_default=True,
        help="Share of the shadowed rows where the challenger must have given the champion's class.",
    ),
    click.option(
        "--below-floor-alpha",
        type=float,
        default=GateThresholds.below_floor_alpha,
        show_default=True,
        help="When the champion is below --min-accuracy too: a challenger below it passes if significantly better "
        "on the same rows by McNemar's exact test at this level (verdict promoted_below_floor, exit 4; 0: off).",
    ),
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
window = _stack(
    click.option(
        "--since",
        default="",
        help="Read the capture's predictions from this time on (ISO 8601, UTC unless it says otherwise, e.g. "
        "2026-12-06T21:00); only the partitions of the window are read.",
    ),
    click.option("--until", default="", help="... and before this time (now by default)."),
    click.option("--hours", default="", help="... or the last N hours (before --until, or now)."),
)

drift = _stack(
    click.option(
        "--alpha",
        type=float,
        default=DriftThresholds.alpha,
        show_default=True,
        help="Significance level of the KS and chi-square tests.",
    ),
    click.option(
        "--psi-threshold",
        type=float,
        default=DriftThresholds.psi_threshold,
        show_default=True,
        help="PSI from which a significant feature shift counts as drift.",
    ),
    click.option(
        "--class-shift",
        type=float,
        default=DriftThresholds.class_shift,
        show_default=True,
        help="Total variation of the predicted-class mix from which a significant shift counts as drift.",
    ),
    click.option(
        "--min-rows",
        type=int,
        default=DriftThresholds.min_rows,
        show_default=True,
        help="Fewer rows give no drift verdict (exit 0).",
    ),
)

live_performance = _stack(
    click.option(
        "--min-live-accuracy",
        type=float,
        default=PerformanceThresholds.min_live_accuracy,
        show_default=True,
        help="Live accuracy on labeled rows below this is a performance drop.",
    ),
    click.option(
        "--min-labeled-rows",
        type=int,
        default=PerformanceThresholds.min_labeled_rows,
        show_default=True,
        help="Fewer labeled rows give no performance verdict.",
    ),
)
