"""The registry contract: what the pipeline's stages write for each other, and how they read it back.

Training, the gate, monitoring, ``registry_tools`` and serving never call each other; they
meet in the registry and the tracking store. Every tag key, verdict, artifact path and
experiment name they share is named here once, so a writer and its reader cannot drift
apart.
"""

from enum import StrEnum

TRAINING_EXPERIMENT = "iris-classification"
MONITORING_EXPERIMENT = "iris-monitoring"
CYCLE_EXPERIMENT = "iris-cycle"  # one run per scheduled monitor -> retrain decision
BATCH_EXPERIMENT = "iris-batch-scoring"

# Run artifacts that later steps read back by run ID instead of by local path.
TRAIN_SPLIT_ARTIFACT = "data/train.csv"
HOLDOUT_SPLIT_ARTIFACT = "data/holdout.csv"
MODEL_ARTIFACT = "model"


class Tag:
    """Tag keys: on model versions (the facts ``registry_tools`` and serving read) and on runs."""

    # model version, from training
    DATA_SOURCE = "data_source"
    TRAINING_RUN_ID = "training_run_id"
    # model version, from the gate
    GATE_DECISION = "gate_decision"
    GATE_REASONS = "gate_reasons"
    EVALUATION_RUN_ID = "evaluation_run_id"
    EVAL_ACCURACY = "eval_accuracy"
    EVAL_F1_SCORE = "eval_f1_score"
    # model version, from the gate, when the champion itself was below ``min_accuracy`` on the gate's rows
    GATE_CHAMPION_ACCURACY = "gate_champion_accuracy"  # the champion's accuracy on those rows
    BELOW_FLOOR_P_VALUE = "below_floor_p_value"  # McNemar's exact test of the challenger against it
    # model version, from monitoring
    DRIFT_STATUS = "drift_status"
    DRIFT_RUN_ID = "drift_run_id"
    PERFORMANCE_STATUS = "performance_status"  # from the labels the feedback log holds
    LIVE_ACCURACY = "live_accuracy"
    LIVE_LABELED_ROWS = "live_labeled_rows"
    # model version, from retraining: how many labeled production rows it learnt from
    PRODUCTION_ROWS = "production_rows"
    # model version, from serving: the shadow evidence summed over every proxy that shadowed it
    # (``iris_core.shadow_evidence``; each proxy keeps its own counts under SHADOW_SOURCE_PREFIX)
    SHADOW_ROWS = "shadow_rows"
    SHADOW_AGREEMENT = "shadow_agreement"
    SHADOW_ERROR_RATE = "shadow_error_rate"
    SHADOW_P99_MS = "shadow_p99_ms"
    SHADOW_AGAINST = "shadow_against"  # the live version the answers were compared with
    SHADOW_SOURCE_PREFIX = "shadow."
    # model version, from serving: what a canary rollout of it ended with, and why
    ROLLOUT_OUTCOME = "rollout_outcome"
    ROLLOUT_EVIDENCE = "rollout_evidence"
    ROLLOUT_BY = "rollout_by"
    ROLLOUT_AT = "rollout_at"
    # runs: which model a run is about, and where its data came from
    MODEL_NAME = "model_name"
    MODEL_VERSION = "model_version"
    MODEL_URI = "model_uri"
    DATA_URI = "data_uri"
    DATA_FALLBACK_REASON = "data_fallback_reason"
    # cycle runs: what the scheduled cycle decided and why
    CYCLE_DECISION = "cycle_decision"
    CYCLE_REASON = "cycle_reason"
    RETRAINED_VERSION = "retrained_version"
    # batch scoring runs
    REJECTS_PATH = "rejects_path"
    BATCH_ENGINE = "batch_engine"
    SPARK_MASTER = "spark_master"

    # The pipeline's own facts about a version; ``registry_tools show`` lists other tags apart.
    VERSION_FACTS = frozenset(
        {
            DATA_SOURCE,
            TRAINING_RUN_ID,
            GATE_DECISION,
            GATE_REASONS,
            EVALUATION_RUN_ID,
            EVAL_ACCURACY,
            EVAL_F1_SCORE,
            PRODUCTION_ROWS,
        }
    )
    # What serving proxies write about a version; ``registry_tools show`` sums them up in two lines.
    SERVING_FACTS = frozenset(
        {
            SHADOW_ROWS,
            SHADOW_AGREEMENT,
            SHADOW_ERROR_RATE,
            SHADOW_P99_MS,
            SHADOW_AGAINST,
            ROLLOUT_OUTCOME,
            ROLLOUT_EVIDENCE,
            ROLLOUT_BY,
            ROLLOUT_AT,
        }
    )


class GateVerdict(StrEnum):
    """The gate's decision, as the ``gate_decision`` tag holds it."""

    PASSED = "passed"
    FAILED = "failed"
    WAITING = "waiting_for_shadow"  # not enough shadow evidence yet: run the gate again later
    # The champion itself was below min_accuracy on the gate's rows, and the challenger, below it too,
    # was significantly better on the same rows: promoted, and a person should look.
    PROMOTED_BELOW_FLOOR = "promoted_below_floor"

    @property
    def promotes(self) -> bool:
        """Whether the version may hold the champion alias by this verdict."""
        return self in (GateVerdict.PASSED, GateVerdict.PROMOTED_BELOW_FLOOR)


class MoveKind(StrEnum):
    """How an alias moved, as its history records it (``how``)."""

    TRAIN = "train"
    GATE = "gate"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    AUTO_ROLLBACK = "auto-rollback"  # by a serving proxy whose canary analysis found the version worse

    @property
    def is_rollback(self) -> bool:
        return self in (MoveKind.ROLLBACK, MoveKind.AUTO_ROLLBACK)


class RolloutOutcome(StrEnum):
    """How a canary rollout of a version ended, as the ``rollout_outcome`` tag holds it."""

    COMPLETED = "completed"  # it took all the traffic and passed its bake window
    ROLLED_BACK = "rolled_back"  # the proxy found it worse than the previous version and moved back


class DriftStatus(StrEnum):
    """The monitor's verdict, as the ``drift_status`` tag holds it."""

    DRIFT = "drift"
    NO_DRIFT = "no_drift"
    INSUFFICIENT_DATA = "insufficient_data"


class PerformanceStatus(StrEnum):
    """The monitor's verdict on live accuracy from labels, as the ``performance_status`` tag holds it."""

    PERFORMANCE_DROP = "performance_drop"
    NO_PERFORMANCE_DROP = "no_performance_drop"
    INSUFFICIENT_LABELS = "insufficient_labels"


class CycleDecision(StrEnum):
    """What one scheduled cycle did, as the ``cycle_decision`` tag of its run holds it."""

    NO_ACTION = "no_action"  # no drift and no performance drop
    SKIPPED = "skipped"  # retraining was due, but one ran within the cooldown or another cycle claimed it
    RETRAINED = "retrained"  # a new version was trained and gated (``gate_decision`` says how that went)


class DataSource(StrEnum):
    """Where a version's training data came from (``data_source``)."""

    CSV = "csv"
    SKLEARN_FALLBACK = "sklearn_fallback"


_REASON_SEPARATOR = "; "


def join_reasons(reasons: list[str]) -> str:
    """The gate's reasons as one tag value; ``split_reasons`` reads them back."""
    return _REASON_SEPARATOR.join(reasons)


def split_reasons(text: str | None) -> list[str]:
    return [reason.strip() for reason in (text or "").split(_REASON_SEPARATOR.strip()) if reason.strip()]


# Registered-model tags ``alias_history.<alias>.<ms>.<nonce>``: one per alias move.
ALIAS_HISTORY_PREFIX = "alias_history"


def alias_history_key(alias: str, at_ms: int, nonce: str) -> str:
    return f"{ALIAS_HISTORY_PREFIX}.{alias}.{at_ms:013d}.{nonce}"


def alias_history_prefix(alias: str) -> str:
    return f"{ALIAS_HISTORY_PREFIX}.{alias}."


# Registered-model tag ``alias_claim.<alias>.<version>``: held for a moment by whoever moves
# the alias away from that version with a compare-and-set (``iris_core.alias_history``).
ALIAS_CLAIM_PREFIX = "alias_claim"


def alias_claim_key(alias: str, version: str) -> str:
    return f"{ALIAS_CLAIM_PREFIX}.{alias}.{version}"


# Registered-model tag holding the latest retrain's claim (JSON: when, by which cycle run): the
# cooldown reads it, and cycles that find a problem at the same moment elect one retrainer with it.
RETRAIN_CLAIM_TAG = "retrain_claim"


# MLflow's registry webhooks (``MlflowClient.create_webhook``) that prompt a serving proxy to
# ask the registry at once where its aliases point: ``registry_tools webhook create`` subscribes
# to these events for the proxy's path, and the proxy checks their signature with the secret
# both ends read from this environment variable.
ALIAS_WEBHOOK_ENTITY = "model_version_alias"
ALIAS_WEBHOOK_ACTIONS = ("created", "deleted")
ALIAS_WEBHOOK_EVENTS = tuple(f"{ALIAS_WEBHOOK_ENTITY}.{action}" for action in ALIAS_WEBHOOK_ACTIONS)
WEBHOOK_PATH = "/webhooks/mlflow"
WEBHOOK_SECRET_ENV = "SERVING_WEBHOOK_SECRET"
