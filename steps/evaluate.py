"""Entry point ``evaluate``: score a model version on its held-out split and apply the promotion gate.

Every version is read through its own contract (``steps.registry.versions``): its features, label
and classes. A version the pipeline trained is scored on the held-out split its training
run logged; any other (a model registered the plain MLflow way) on the table given with
``--data-path`` and ``--label``, checked against its contract. The champion is scored on
the same rows only when it reads the same features; otherwise the gate says why it did
not compare. Both are scored as served and their answers read as classes
(``iris_core.table.models.answer_class``).

The challenger becomes ``champion`` only if it is accurate enough and not worse than the
current champion on the same rows (``steps.promotion.gate``), and, with ``min_shadow_rows``, only
once serving proxies have shadowed it against the champion on live traffic long enough
(``iris_core.shadow_evidence``); before that the gate says "waiting for shadow evidence"
and exits 3, so a scheduler can run it again later. When the champion itself is below
``min_accuracy`` on these rows (the world changed under it), a challenger below it too is
promoted if it is significantly better on the same rows (``steps.promotion.gate``): the verdict
``promoted_below_floor``, a warning, the p-value and the champion's accuracy as tags, and
exit 4, for a person to look. The decision and its reasons are logged to the evaluation
run and set as model-version tags; the alias moves through ``iris_core.alias_history`` so
the move lands in the alias history.
"""

import logging
from dataclasses import dataclass, field

import click
import pandas as pd

from iris_core.contract import HOLDOUT_SPLIT_ARTIFACT, GateVerdict, MoveKind, Tag, join_reasons
from iris_core.errors import EXIT_REVIEW
from iris_core.refs import CHALLENGER, CHAMPION, DEFAULT_MODEL_NAME, alias_uri, version_uri
from iris_core.resolver import alias_version
from iris_core.shadow_evidence import evidence
from iris_core.table.contract import TableContract
from steps.common import cli, options
from steps.common.config import GateThresholds
from steps.common.errors import GateFailed, GateWaiting
from steps.monitoring.production_data import production_comparison
from steps.promotion.gate import GateDecision, ShadowCheck, check_shadow, decide, paired_counts
from steps.registry.uris import check_model_uri, resolve_model_uri
from steps.registry.versions import predict_classes, version_contract
from steps.training.classification import classification_metrics
from steps.training.splits import load_split, table_rows

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    model_name: str
    version: str
    metrics: dict
    champion_version: str | None
    decision: GateDecision
    promoted: bool
    production: dict = field(default_factory=dict)  # how both did on the held-out production rows, if any


def load_holdout(run_id: str | None, label: str) -> pd.DataFrame | None:
    """The held-out split the version's training run logged, labels as text; None when the run logged none."""
    return load_split(run_id, HOLDOUT_SPLIT_ARTIFACT, label)


def evaluation_rows(
    run_id: str | None, contract: TableContract, data_path: str, label: str
) -> tuple[pd.DataFrame, str]:
    """(rows, their label column): the version's held-out split, else the table given."""
    if contract.label:
        holdout = load_holdout(run_id, contract.label)
        if holdout is not None:
            return holdout, contract.label
    _logger.info("No held-out split for this version; evaluating it on %s", data_path)
    rows = table_rows(data_path, label, contract)
    return rows, str(rows.columns[-1])


def evaluate_with_mlflow(rows: pd.DataFrame, label: str, features: list[str], predicted: list[str]) -> None:
    """Run MLflow's default classifier evaluator on the predictions in the active run, for its metrics and plots.

    The evaluator expects a single-column model output, while our model returns four
    columns per row, so it gets the predictions as a static dataset instead of the model.
    The gate's own figures are ``steps.training.classification``'s (weighted averages for two
    classes too, where MLflow reports the positive class's), so that challenger and
    champion are measured alike.
    """
    import mlflow

    if len(set(rows[label].astype(str)) | set(predicted)) < 2:
        _logger.warning("MLflow's evaluator needs two classes among the labels and answers; it is skipped")
        return
    column = next(name for name in ("prediction", "_prediction", "__prediction") if name not in rows.columns)
    mlflow.models.evaluate(
        data=rows[[*features, label]].assign(**{column: predicted}),
        targets=label,
        predictions=column,
        model_type="classifier",
        evaluators=["default"],
    )


def evaluate_version(
    client,
    model_name: str,
    version: str,
    holdout: pd.DataFrame,
    thresholds: GateThresholds,
    label: str | None = None,
) -> EvaluationResult:
    """Evaluate inside the active run, tag the version with the decision, and promote on a pass.

    ``holdout`` holds the version's features and the label column ``label`` (its
    contract's label unless told).
    """
    import mlflow

    from iris_core.alias_history import move_alias

    model_uri = version_uri(model_name, version)
    contract = version_contract(model_uri)
    label = label or contract.label
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags({Tag.MODEL_NAME: model_name, Tag.MODEL_VERSION: version, Tag.MODEL_URI: model_uri})
    cli.log_params({"model_uri": model_uri, **thresholds.__dict__})
    truth = [str(value) for value in holdout[label]]
    predicted = _classes(predict_classes(model_uri, holdout, contract))
    classes = contract.classes or tuple(sorted(set(truth) | set(predicted)))
    evaluate_with_mlflow(holdout, label, list(contract.feature_names), predicted)
    metrics = classification_metrics(truth, predicted, classes)
    champion_version = alias_version(client, model_name, CHAMPION)
    champion_metrics = champion_predicted = uncompared = paired = None
    if champion_version not in (None, version):
        champion_uri = version_uri(model_name, champion_version)
        champion = version_contract(champion_uri)
        uncompared = not_comparable(contract, champion, champion_version)
        if uncompared is None:
            champion_predicted = _classes(predict_classes(champion_uri, holdout, champion))
            champion_metrics = classification_metrics(truth, champion_predicted, classes)
            mlflow.log_metrics({f"champion_{k}": champion_metrics[k] for k in ("accuracy", "f1_score")})
            paired = paired_counts(truth, predicted, champion_predicted)
    production = production_comparison(holdout, label, predicted, champion_predicted)
    if production:
        mlflow.log_metrics(production)
    shadow = shadow_rule(client, model_name, version, champion_version, thresholds)
    decision = decide(
        metrics,
        champion_metrics,
        thresholds.min_accuracy,
        thresholds.max_regression,
        shadow,
        uncompared=uncompared,
        paired=paired,
        below_floor_alpha=thresholds.below_floor_alpha,
    )
    reasons = join_reasons(decision.reasons)
    mlflow.set_tags({Tag.GATE_DECISION: decision.verdict, Tag.GATE_REASONS: reasons})
    version_tags = {
        Tag.GATE_DECISION: decision.verdict,
        Tag.GATE_REASONS: reasons,
        Tag.EVALUATION_RUN_ID: run_id,
        Tag.EVAL_ACCURACY: f"{metrics['accuracy']:.6f}",
        Tag.EVAL_F1_SCORE: f"{metrics['f1_score']:.6f}",
    }
    if decision.below_floor is not None:  # the champion was below the floor too: the paired test decided
        mlflow.log_metric(Tag.BELOW_FLOOR_P_VALUE, decision.below_floor.p_value)
        version_tags[Tag.GATE_CHAMPION_ACCURACY] = f"{decision.below_floor.champion_accuracy:.6f}"
        version_tags[Tag.BELOW_FLOOR_P_VALUE] = f"{decision.below_floor.p_value:.3g}"
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    promoted = decision.passed and champion_version != version
    if promoted:
        move_alias(client, model_name, CHAMPION, version, how=MoveKind.GATE, reason=reasons)
    if promoted and decision.verdict == GateVerdict.PROMOTED_BELOW_FLOOR:
        _logger.warning(
            "%s version %s was promoted below min_accuracy %s: champion version %s scored %.4f on the same rows, "
            "and this version, %.4f, is significantly better (p-value %.2g); a person should look",
            model_name,
            version,
            thresholds.min_accuracy,
            champion_version,
            decision.below_floor.champion_accuracy,
            metrics["accuracy"],
            decision.below_floor.p_value,
        )
    return EvaluationResult(model_name, version, metrics, champion_version, decision, promoted, production)


def _classes(answers: list[str | None]) -> list[str]:
    """An answer that names no class counts as wrong: the empty text is never a class."""
    return ["" if answer is None else answer for answer in answers]


def not_comparable(contract: TableContract, champion: TableContract, champion_version: str) -> str | None:
    """Why the champion cannot be scored on the challenger's rows (it reads other features); None when it can."""
    ours, theirs = set(contract.feature_names), set(champion.feature_names)
    if ours == theirs:
        return None
    missing = sorted(theirs - ours)
    extra = sorted(ours - theirs)
    parts = []
    if missing:
        parts.append(f"it reads {_names(missing)} that this version does not")
    if extra:
        parts.append(f"this version reads {_names(extra)} that it does not")
    return f"not compared with champion version {champion_version}: " + "; ".join(parts)


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def shadow_rule(
    client, model_name: str, version: str, champion_version: str | None, thresholds: GateThresholds
) -> ShadowCheck | None:
    """The shadow rule's answer from the version's tags; None when it is off or there is no champion to compare with."""
    if thresholds.min_shadow_rows <= 0 or champion_version in (None, version):
        return None
    tags = client.get_model_version(model_name, version).tags or {}
    counts = evidence(tags, champion_version)
    return check_shadow(counts, thresholds.min_shadow_rows, thresholds.min_shadow_agreement)


def report(result: EvaluationResult) -> str:
    lines = [f"{result.model_name} version {result.version}: gate {result.decision.verdict}"]
    lines += [f"  - {reason}" for reason in result.decision.reasons]
    if result.production.get("production_holdout_rows"):
        rows = int(result.production["production_holdout_rows"])
        line = (
            f"  on the {rows} labeled production rows held out: accuracy {result.production['production_accuracy']:.4f}"
        )
        if "champion_production_accuracy" in result.production:
            line += f" vs champion {result.production['champion_production_accuracy']:.4f}"
        lines.append(line)
    if result.promoted:
        lines.append(f"  @{CHAMPION} -> version {result.version} (was {result.champion_version or 'unset'})")
    elif result.decision.passed:
        lines.append(f"  version {result.version} already holds @{CHAMPION}")
    else:
        lines.append(f"  @{CHAMPION} stays on version {result.champion_version or 'unset'}")
    return "\n".join(lines)


@click.command(
    help="Evaluate a model version on its held-out split (or, for a version the pipeline did not train, on the "
    "table --data-path with --label); promote it to 'champion' if it passes the gate."
)
@click.option("--model-uri", default="", help="The version to evaluate.  [default: models:/<model-name>@challenger]")
@options.model_name
@options.data_path
@options.label
@options.gate
def main(model_uri, model_name, data_path, label, gate_thresholds):
    ref = check_model_uri(model_uri.strip() or alias_uri(model_name or DEFAULT_MODEL_NAME, CHALLENGER))
    import mlflow  # after the checks: a bad argument should not wait for MLflow's import

    client = mlflow.MlflowClient()
    target = resolve_model_uri(client, ref)
    contract = version_contract(ref.version_uri(target.version))
    rows, row_label = evaluation_rows(target.run_id, contract, data_path, label)
    with cli.step_run("evaluate"):
        result = evaluate_version(client, ref.name, target.version, rows, gate_thresholds, label=row_label)
    click.echo(report(result))
    raise_unless_passed(result)


def raise_unless_passed(result: EvaluationResult) -> None:
    """Exit 3 while the gate waits for shadow evidence, 1 when it failed, 4 when it promoted the version below
    the floor (done, and a person should look: the warning said why)."""
    if result.decision.waiting:
        raise GateWaiting(
            f"gate waiting for shadow evidence for {result.model_name} version {result.version}; run it again later"
        )
    if not result.decision.passed:
        raise GateFailed(f"gate failed for {result.model_name} version {result.version}")
    if result.decision.verdict == GateVerdict.PROMOTED_BELOW_FLOOR:
        raise click.exceptions.Exit(EXIT_REVIEW)


if __name__ == "__main__":
    cli.run(main)
