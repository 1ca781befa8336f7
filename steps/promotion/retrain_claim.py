"""Who retrains: the cooldown, and one retrainer elected among cycles that find a problem at the same moment.

The record lives in the registry, so every scheduler sees it: the registered-model tag
``retrain_claim`` holds the latest retrain's claim as JSON (when, by which cycle run, why,
and the version it made once there is one). A cycle that wants to retrain

1. reads the claim: one made within ``cooldown_hours`` means skip (``cooldown``);
2. writes its own, with a nonce, waits ``settle_s`` and reads the tag back: the last writer
   wins, and a cycle that reads another's nonce stands down (``claimed``).

The registry has no compare-and-set, so this is the election ``iris_core.alias_history``
uses for alias moves: two cycles that both pass step 1 both write within a registry round
trip of each other, far less than ``settle_s``, and both read back the same winner. A
claim counts for the cooldown even when its retrain failed, so a failing retrain is not
started again every time the scheduler fires.
"""

import json
import time
import uuid
from dataclasses import asdict, dataclass, replace

from iris_core.alias_history import CLAIM_SETTLE_S, current_user
from iris_core.contract import RETRAIN_CLAIM_TAG
from iris_core.resolver import get_model

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Claim:
    at_ms: int
    run_id: str
    by: str
    nonce: str
    reason: str = ""
    version: str | None = None  # what the retrain registered, once it has

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "Claim | None":
        """The claim a tag holds; None for no tag or one nobody can read (it then blocks nothing)."""
        try:
            record = json.loads(text or "")
            return cls(
                **{key: record[key] for key in ("at_ms", "run_id", "by", "nonce")},
                reason=record.get("reason", ""),
                version=record.get("version"),
            )
        except (ValueError, TypeError, KeyError):
            return None

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at_ms / 1000))


def in_cooldown(claim: Claim | None, now_ms: int, cooldown_hours: float) -> bool:
    """Whether a retrain claimed at ``claim.at_ms`` still holds the next one back."""
    return claim is not None and now_ms - claim.at_ms < cooldown_hours * HOUR_MS


@dataclass(frozen=True)
class ClaimOutcome:
    won: bool
    reason: str  # why not, when not
    claim: Claim | None  # the winner's claim (ours when won)


def read_claim(client, model_name: str) -> Claim | None:
    return Claim.from_json(get_model(client, model_name).tags.get(RETRAIN_CLAIM_TAG))


def claim_retrain(
    client,
    model_name: str,
    run_id: str,
    reason: str,
    cooldown_hours: float,
    *,
    settle_s: float = CLAIM_SETTLE_S,
    now=time.time,
) -> ClaimOutcome:
    """Claim the next retrain of ``model_name`` for cycle run ``run_id``, unless the cooldown or a rival forbids it."""
    held = read_claim(client, model_name)
    now_ms = int(now() * 1000)
    if in_cooldown(held, now_ms, cooldown_hours):
        return ClaimOutcome(
            False,
            f"a retrain ran within cooldown_hours {cooldown_hours:g}: cycle run {held.run_id} claimed it at {held.when}",
            held,
        )
    mine = Claim(now_ms, run_id, current_user(), uuid.uuid4().hex, reason)
    client.set_registered_model_tag(model_name, RETRAIN_CLAIM_TAG, mine.to_json())
    time.sleep(settle_s)
    winner = read_claim(client, model_name)
    if winner is None or winner.nonce != mine.nonce:
        rival = f"cycle run {winner.run_id}" if winner else "another cycle"
        return ClaimOutcome(False, f"{rival} claimed this retrain at the same time", winner)
    return ClaimOutcome(True, "", mine)


def record_version(client, model_name: str, claim: Claim, version: str) -> None:
    """Add the version the claimed retrain registered to the claim, unless a later claim replaced it."""
    held = read_claim(client, model_name)
    if held is not None and held.nonce == claim.nonce:
        client.set_registered_model_tag(model_name, RETRAIN_CLAIM_TAG, replace(claim, version=version).to_json())
