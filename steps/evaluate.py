"""Entry point ``evaluate``: score a model version on its held-out split and apply the promotion gate.

The challenger becomes ``champion`` only if it is accurate enough and not worse than the
current champion on the same rows. The decision and its reasons are logged to the
evaluation run and set as model-version tags; the alias moves through
``registry_tools.aliases`` so the move lands in the alias history.
"""

import io
import logging
from dataclasses import dataclass, field

import click
import pandas as pd

from registry_tools.names import ModelRef, parse_model_uri
from steps import cli
from steps.config import CHALLENGER, CHAMPION, DEFAULT_MODEL_NAME, FEATURES, HOLDOUT_SPLIT_ARTIFACT, LABEL
from steps.errors import GateFailed, InvalidParameter, StepError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EvaluationResult:
    model_name: str
    version: str
    metrics: dict
    champion_version: str | None
    decision: GateDecision
    promoted: bool


def decide(
    challenger: dict, champion: dict | None, min_accuracy: float, max_regression: float
) -> GateDecision:
    """The gate as a pure function: absolute floor, then no regression beyond the tolerance."""
    reasons, passed = [], True
    accuracy = challenger["accuracy"]
    if accuracy >= min_accuracy:
        reasons.append(f"accuracy {accuracy:.4f} >= min_accuracy {min_accuracy}")
    else:
        passed = False
        reasons.append(f"accuracy {accuracy:.4f} < min_accuracy {min_accuracy}")
    for metric in ("accuracy", "f1_score") if champion else ():
        drop = champion[metric] - challenger[metric]
        verdict = "within" if drop <= max_regression + 1e-12 else "exceeds"
        passed = passed and verdict == "within"
        reasons.append(
            f"{metric} {challenger[metric]:.4f} vs champion {champion[metric]:.4f}: "
            f"drop {max(drop, 0):.4f} {verdict} max_regression {max_regression}"
        )
    return GateDecision(passed, reasons)


def check_model_uri(model_uri: str) -> ModelRef:
    try:
        return parse_model_uri(model_uri)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


def resolve_model_uri(client, model_uri: str) -> tuple[str, str]:
    """(name, version) that the URI names in the registry right now."""
    from mlflow.exceptions import MlflowException

    ref = check_model_uri(model_uri)
    name, version, alias = ref.name, ref.version, ref.alias
    try:
        if alias:
            return name, str(client.get_model_version_by_alias(name, alias).version)
        client.get_model_version(name, version)
    except MlflowException:
        raise StepError(f"no model version found for {model_uri}") from None
    return name, version


def load_holdout(client, run_id: str) -> pd.DataFrame:
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
        data=holdout.assign(prediction=predicted.to_numpy()),
        targets=LABEL,
        predictions="prediction",
        model_type="classifier",
        evaluators=["default"],
    )
    names = {"accuracy": "accuracy_score", "precision": "precision_score", "recall": "recall_score", "f1_score": "f1_score"}
    return {ours: float(result.metrics[theirs]) for ours, theirs in names.items()}


def evaluate_version(
    client, model_name: str, version: str, holdout: pd.DataFrame, min_accuracy: float, max_regression: float
) -> EvaluationResult:
    """Evaluate inside the active run, tag the version with the decision, and promote on a pass."""
    import mlflow

    from registry_tools.aliases import alias_version, move_alias
    from steps.train import classification_metrics

    model_uri = f"models:/{model_name}/{version}"
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags({"model_name": model_name, "model_version": version, "model_uri": model_uri})
    mlflow.log_params({"model_uri": model_uri, "min_accuracy": min_accuracy, "max_regression": max_regression})
    metrics = evaluate_with_mlflow(holdout, predict(model_uri, holdout))
    champion_version = alias_version(client, model_name, CHAMPION)
    champion_metrics = None
    if champion_version not in (None, version):
        champion_predicted = predict(f"models:/{model_name}/{champion_version}", holdout)
        champion_metrics = classification_metrics(holdout[LABEL], champion_predicted)
        mlflow.log_metrics({f"champion_{k}": champion_metrics[k] for k in ("accuracy", "f1_score")})
    decision = decide(metrics, champion_metrics, min_accuracy, max_regression)
    verdict = "passed" if decision.passed else "failed"
    mlflow.set_tags({"gate_decision": verdict, "gate_reasons": "; ".join(decision.reasons)})
    version_tags = {
        "gate_decision": verdict,
        "gate_reasons": "; ".join(decision.reasons),
        "evaluation_run_id": run_id,
        "eval_accuracy": f"{metrics['accuracy']:.6f}",
        "eval_f1_score": f"{metrics['f1_score']:.6f}",
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    promoted = decision.passed and champion_version != version
    if promoted:
        move_alias(client, model_name, CHAMPION, version, how="gate", reason="; ".join(decision.reasons))
    return EvaluationResult(model_name, version, metrics, champion_version, decision, promoted)


def report(result: EvaluationResult) -> str:
    lines = [f"{result.model_name} version {result.version}: gate {'passed' if result.decision.passed else 'failed'}"]
    lines += [f"  - {reason}" for reason in result.decision.reasons]
    if result.promoted:
        lines.append(f"  @{CHAMPION} -> version {result.version} (was {result.champion_version or 'unset'})")
    elif result.decision.passed:
        lines.append(f"  version {result.version} already holds @{CHAMPION}")
    else:
        lines.append(f"  @{CHAMPION} stays on version {result.champion_version or 'unset'}")
    return "\n".join(lines)


def check_thresholds(min_accuracy: float, max_regression: float) -> None:
    if not 0 <= min_accuracy < float("inf"):
        raise InvalidParameter(f"min_accuracy must be a non-negative number, got {min_accuracy}")
    if not 0 <= max_regression <= 1:
        raise InvalidParameter(f"max_regression must be between 0 and 1, got {max_regression}")


@click.command(help="Evaluate a model version on its held-out split; promote it to 'champion' if it passes the gate.")
@click.option("--model-uri", default=f"models:/{DEFAULT_MODEL_NAME}@{CHALLENGER}", show_default=True)
@click.option("--min-accuracy", type=float, default=0.9, show_default=True)
@click.option("--max-regression", type=float, default=0.01, show_default=True, help="Largest allowed drop in accuracy or f1 against the champion.")
def main(model_uri, min_accuracy, max_regression):
    import mlflow

    check_thresholds(min_accuracy, max_regression)
    check_model_uri(model_uri)
    client = mlflow.MlflowClient()
    model_name, version = resolve_model_uri(client, model_uri)
    holdout = load_holdout(client, client.get_model_version(model_name, version).run_id)
    with cli.step_run("evaluate"):
        result = evaluate_version(client, model_name, version, holdout, min_accuracy, max_regression)
    click.echo(report(result))
    if not result.decision.passed:
        raise GateFailed(f"gate failed for {model_name} version {version}")


if __name__ == "__main__":
    cli.run(main)
