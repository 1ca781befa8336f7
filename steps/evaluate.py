"""Entry point ``evaluate``: score a model version on its held-out split and apply the promotion gate.

The challenger becomes ``champion`` only if it is accurate enough and not worse than the
current champion on the same rows (``steps.gate``), and, with ``min_shadow_rows``, only
once serving proxies have shadowed it against the champion on live traffic long enough
(``iris_core.shadow_evidence``); before that the gate says "waiting for shadow evidence"
and exits 3, so a scheduler can run it again later. The decision and its reasons are
logged to the evaluation run and set as model-version tags; the alias moves through
``iris_core.alias_history`` so the move lands in the alias history.
"""

import io
import logging
from dataclasses import dataclass, field

import click
import pandas as pd

from iris_core.contract import HOLDOUT_SPLIT_ARTIFACT, MoveKind, Tag, join_reasons
from iris_core.refs import CHALLENGER, CHAMPION, DEFAULT_MODEL_NAME, alias_uri, version_uri
from iris_core.resolver import alias_version
from iris_core.schema import FEATURES, LABEL
from iris_core.shadow_evidence import evidence
from steps import cli, options
from steps.classification import classification_metrics
from steps.config import GateThresholds
from steps.errors import GateFailed, GateWaiting, StepError
from steps.gate import GateDecision, ShadowCheck, check_shadow, decide
from steps.production_data import production_comparison
from steps.registry import check_model_uri, resolve_model_uri

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


def load_holdout(run_id: str) -> pd.DataFrame:
    """The held-out split that the version's training run logged."""
    import mlflow

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{HOLDOUT_SPLIT_ARTIFACT}")
    except Exception:
        raise StepError(f"run {run_id} has no {HOLDOUT_SPLIT_ARTIFACT}: was it trained by this pipeline?") from None
    return pd.read_csv(io.StringIO(text))


def predict(model_uri: str, holdout: pd.DataFrame) -> pd.Series:
    """Class names the registered pyfunc model predicts for the rows, as served."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).predict(holdout[list(FEATURES)])["prediction"]


def evaluate_with_mlflow(holdout: pd.DataFrame, predicted: pd.Series) -> dict:
    """Run MLflow's default classifier evaluator on the predictions in the active run.

    The evaluator expects a single-column model output, while our model returns four
    columns per row, so it gets the predictions as a static dataset instead of the model.
    """
    import mlflow

    result = mlflow.models.evaluate(
        data=holdout[[*FEATURES, LABEL]].assign(prediction=predicted.to_numpy()),
        targets=LABEL,
        predictions="prediction",
        model_type="classifier",
        evaluators=["default"],
    )
    names = {
        "accuracy": "accuracy_score",
        "precision": "precision_score",
        "recall": "recall_score",
        "f1_score": "f1_score",
    }
    return {ours: float(result.metrics[theirs]) for ours, theirs in names.items()}


def evaluate_version(
    client, model_name: str, version: str, holdout: pd.DataFrame, thresholds: GateThresholds
) -> EvaluationResult:
    """Evaluate inside the active run, tag the version with the decision, and promote on a pass."""
    import mlflow

    from iris_core.alias_history import move_alias

    model_uri = version_uri(model_name, version)
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags({Tag.MODEL_NAME: model_name, Tag.MODEL_VERSION: version, Tag.MODEL_URI: model_uri})
    cli.log_params({"model_uri": model_uri, **thresholds.__dict__})
    predicted = predict(model_uri, holdout)
    metrics = evaluate_with_mlflow(holdout, predicted)
    champion_version = alias_version(client, model_name, CHAMPION)
    champion_metrics = champion_predicted = None
    if champion_version not in (None, version):
        champion_predicted = predict(version_uri(model_name, champion_version), holdout)
        champion_metrics = classification_metrics(holdout[LABEL], champion_predicted)
        mlflow.log_metrics({f"champion_{k}": champion_metrics[k] for k in ("accuracy", "f1_score")})
    production = production_comparison(holdout, predicted, champion_predicted)
    if production:
        mlflow.log_metrics(production)
    shadow = shadow_rule(client, model_name, version, champion_version, thresholds)
    decision = decide(metrics, champion_metrics, thresholds.min_accuracy, thresholds.max_regression, shadow)
    reasons = join_reasons(decision.reasons)
    mlflow.set_tags({Tag.GATE_DECISION: decision.verdict, Tag.GATE_REASONS: reasons})
    version_tags = {
        Tag.GATE_DECISION: decision.verdict,
        Tag.GATE_REASONS: reasons,
        Tag.EVALUATION_RUN_ID: run_id,
        Tag.EVAL_ACCURACY: f"{metrics['accuracy']:.6f}",
        Tag.EVAL_F1_SCORE: f"{metrics['f1_score']:.6f}",
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    promoted = decision.passed and champion_version != version
    if promoted:
        move_alias(client, model_name, CHAMPION, version, how=MoveKind.GATE, reason=reasons)
    return EvaluationResult(model_name, version, metrics, champion_version, decision, promoted, production)


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


@click.command(help="Evaluate a model version on its held-out split; promote it to 'champion' if it passes the gate.")
@click.option("--model-uri", default=alias_uri(DEFAULT_MODEL_NAME, CHALLENGER), show_default=True)
@options.gate
def main(model_uri, min_accuracy, max_regression, min_shadow_rows, min_shadow_agreement):
    thresholds = GateThresholds(min_accuracy, max_regression, min_shadow_rows, min_shadow_agreement).validated()
    ref = check_model_uri(model_uri)
    import mlflow  # after the checks: a bad argument should not wait for MLflow's import

    client = mlflow.MlflowClient()
    target = resolve_model_uri(client, ref)
    holdout = load_holdout(target.run_id)
    with cli.step_run("evaluate"):
        result = evaluate_version(client, ref.name, target.version, holdout, thresholds)
    click.echo(report(result))
    raise_unless_passed(result)


def raise_unless_passed(result: EvaluationResult) -> None:
    """Exit 3 while the gate waits for shadow evidence, 1 when it failed."""
    if result.decision.waiting:
        raise GateWaiting(
            f"gate waiting for shadow evidence for {result.model_name} version {result.version}; run it again later"
        )
    if not result.decision.passed:
        raise GateFailed(f"gate failed for {result.model_name} version {result.version}")


if __name__ == "__main__":
    cli.run(main)
