"""Entry point ``cycle``: what a scheduler runs. Monitor; on drift or a performance drop, retrain through the gate.

One run per cycle (experiment ``iris-cycle`` when started directly), with the ``monitor``
check as a nested run and, when it retrains, nested ``train`` and ``evaluate`` runs
(``steps.retrain``). The cycle run records the decision as tags: ``cycle_decision``
(``no_action``, ``skipped``, ``retrained``), ``cycle_reason``, and after a retrain
``retrained_version`` and ``gate_decision``. A retrain needs the claim of
``steps.promotion.retrain_claim``: none within ``cooldown_hours`` of the last one, and one retrainer
among cycles that run at once.

The metric ``needs_review`` is 1 on a cycle whose outcome a person should look at (the
retrained version failed the gate, or was promoted below it), else 0, so that a search of
the cycle runs finds them even where the exit code is lost (``mlflow run`` turns every
non-zero code into 1).

Exit codes: 0 when nothing was wrong, when a retrain was skipped, and when the retrained
version passed the gate; 1 when it failed the gate (the live version keeps serving and
someone should look); 3 while the gate waits for shadow evidence; 4 when the gate promoted
it below ``min_accuracy`` because the champion was below it too and the new version is
significantly better (``promoted_below_floor``): it serves now, and someone should look.
"""

import logging

import click

from iris_core.contract import CYCLE_EXPERIMENT, CycleDecision, GateVerdict, Tag
from iris_core.refs import CHAMPION
from steps.common import cli, options
from steps.common.config import DriftThresholds, PerformanceThresholds, TableSpec
from steps.evaluate import raise_unless_passed
from steps.monitor import MonitorResult, gather, monitor_version
from steps.monitoring.labels import locate
from steps.promotion.retrain_claim import claim_retrain, record_version
from steps.retrain import load_base, retrain, summary

_logger = logging.getLogger(__name__)

NEEDS_REVIEW_METRIC = "needs_review"
# What a retrain's gate verdict means for the cycle: what its reason says, and whether a person should look.
OUTCOMES = {
    GateVerdict.PASSED: ("promoted", False),
    GateVerdict.PROMOTED_BELOW_FLOOR: ("promoted below the gate's floor, a person should look", True),
    GateVerdict.FAILED: ("gate failed", True),
    GateVerdict.WAITING: (f"gate {GateVerdict.WAITING}", False),
}


def problems(result: MonitorResult, thresholds: DriftThresholds, performance: PerformanceThresholds) -> list[str]:
    """Why the checked version needs retraining: its verdicts and their reasons; empty when it does not."""
    found = []
    if result.performance_drop:
        found.append("performance_drop: " + "; ".join(result.performance.reasons(performance)))
    if result.drift:
        shifted = result.assessment.drifted_features
        mix = result.assessment.class_mix
        shifted += ["predicted-class mix"] if mix is not None and mix.shifted else []
        found.append("drift: " + ", ".join(shifted))
    return found


def no_problem_reason(result: MonitorResult) -> str:
    verdicts = [f"{result.assessment.status} on {result.assessment.rows} rows"]
    if result.performance is not None:
        verdicts.append(f"{result.performance.status} on {result.performance.rows} labeled rows")
    return f"version {result.version}: " + ", ".join(verdicts)


def record(decision: CycleDecision, reason: str, **tags) -> None:
    import mlflow

    mlflow.set_tags({Tag.CYCLE_DECISION: decision, Tag.CYCLE_REASON: reason[:4000], **tags})
    click.echo(f"cycle: {decision}: {reason}")


@click.command(
    help="Monitor the serving version; on drift or a performance drop, retrain on base plus labeled production "
    "data and gate the new version, unless a retrain ran within --cooldown-hours. Every decision is a run."
)
@options.live_traffic
@options.model_name
@click.option("--alias", default=CHAMPION, show_default=True, help="Check the version holding this alias.")
@options.drift
@options.live_performance
@options.cooldown
@options.table
@options.training
@options.gate
def main(
    model_name,
    alias,
    drift_thresholds,
    performance_thresholds,
    cycle_settings,
    data_path,
    label,
    contract,
    config,
    gate_thresholds,
    **traffic,
):
    spec = TableSpec(data_path, label, model_name, contract).validated()
    window, predictions, feedback = locate(**traffic)
    base = load_base(spec, model_name, config)  # a table that fails a check stops the cycle before its run starts
    import mlflow

    client = mlflow.MlflowClient()
    inputs = gather(client, model_name, alias, None, predictions, feedback, data_path, label, window)
    evaluation = None
    with cli.step_run("cycle", default_experiment=CYCLE_EXPERIMENT) as run:
        mlflow.set_tags({Tag.MODEL_NAME: model_name, Tag.MODEL_VERSION: inputs.version})
        with mlflow.start_run(run_name="monitor", nested=True):
            checked = monitor_version(client, model_name, inputs, drift_thresholds, performance_thresholds)
        for line in checked.summary(drift_thresholds, performance_thresholds):
            click.echo(line)
        found = problems(checked, drift_thresholds, performance_thresholds)
        if not found:
            record(CycleDecision.NO_ACTION, no_problem_reason(checked))
        else:
            reason = f"version {checked.version}: " + "; ".join(found)
            claim = claim_retrain(client, model_name, run.info.run_id, reason, cycle_settings.cooldown_hours)
            if not claim.won:
                record(CycleDecision.SKIPPED, f"{reason}; not retrained: {claim.reason}")
            else:
                result = retrain(client, base, predictions, feedback, config, model_name, gate_thresholds, window)
                record_version(client, model_name, claim.claim, result.trained.version)
                for line in summary(result):
                    click.echo(line)
                evaluation = result.evaluation
                outcome, review = OUTCOMES[evaluation.decision.verdict]
                mlflow.log_metric(NEEDS_REVIEW_METRIC, int(review))
                record(
                    CycleDecision.RETRAINED,
                    f"{reason}; retrained into version {result.trained.version}, {outcome}",
                    **{Tag.RETRAINED_VERSION: result.trained.version, Tag.GATE_DECISION: evaluation.decision.verdict},
                )
        if evaluation is None:
            mlflow.log_metric(NEEDS_REVIEW_METRIC, 0)
    if evaluation is not None:
        raise_unless_passed(evaluation)


if __name__ == "__main__":
    cli.run(main)
