"""What a router shows of a rollout (``/health``) and counts of what happened (``/metrics``)."""

from dataclasses import asdict, dataclass
from enum import StrEnum


class RolloutState(StrEnum):
    STARTING = "starting"  # the new version's model server is starting beside the live one
    SWITCHED = "switched"  # traffic moved to it
    FAILED = "failed"  # it did not start; tried again after ``retry_in_s``
    ABANDONED = "abandoned"  # it failed, and the alias moved back to the live version
    SUPERSEDED = "superseded"  # the alias moved on while it started: kept warm, not switched to
    CANARY = "canary"  # it takes ``share`` percent of the requests, the previous version the rest
    BAKING = "baking"  # it takes all requests; the previous version is kept warm and compared
    COMPLETED = "completed"  # it passed every step and the bake window
    ROLLED_BACK = "rolled_back"  # the analysis found it worse: traffic went back to the previous version
    STOPPED = "stopped"  # the alias moved away during the delivery: traffic went back to the previous version


@dataclass(frozen=True)
class Rollout:
    """The last move towards a version, as ``/health`` shows it (fields that do not apply are left out)."""

    version: str
    from_version: str | None
    state: RolloutState
    attempt: int | None = None
    started_at: float | None = None
    error: str | None = None
    retry_in_s: float | None = None
    cold: bool | None = None
    at: float | None = None
    share: int | None = None  # percent of requests the new version takes now (delivery)
    step: str | None = None  # "2/3": which of the --canary steps
    checks: dict | None = None  # the analysis's latest figures (delivery)
    reason: str | None = None  # why it was rolled back or stopped
    registry: str | None = None  # what happened to the alias after an automatic rollback

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None or key == "from_version"}


@dataclass
class Events:
    """What happened since start, counted for ``/metrics``."""

    restarts: int = 0
    rollouts_done: int = 0
    rollouts_failed: int = 0
    rollouts_rolled_back: int = 0
    rollouts_stopped: int = 0
    compare_dropped_rows: int = 0  # copies of a delivered version's requests its baseline's queue could not take
