"""The retrain claim in process, against a registry fake: the cooldown, and one winner among cycles at once."""

import json
import threading
from types import SimpleNamespace

from iris_core.contract import RETRAIN_CLAIM_TAG
from steps.promotion.retrain_claim import HOUR_MS, Claim, claim_retrain, in_cooldown, read_claim, record_version


class FakeRegistry:
    """The registered model's tags, as ``get_registered_model`` and ``set_registered_model_tag`` see them."""

    def __init__(self, tags: dict | None = None):
        self.tags = dict(tags or {})
        self.lock = threading.Lock()
        self.writes = 0

    def get_registered_model(self, name):
        with self.lock:
            return SimpleNamespace(name=name, tags=dict(self.tags), aliases={})

    def set_registered_model_tag(self, name, key, value):
        with self.lock:
            self.tags[key] = value
            self.writes += 1


NOW = 1_800_000_000.0


def claim_at(ms: int, run_id: str = "earlier-run") -> str:
    return Claim(ms, run_id, "someone", "n0nce", "drift").to_json()


def test_without_any_claim_the_cycle_wins_and_its_claim_is_recorded():
    registry = FakeRegistry()
    outcome = claim_retrain(registry, "iris", "run-1", "performance_drop", 24, settle_s=0, now=lambda: NOW)
    assert outcome.won
    recorded = json.loads(registry.tags[RETRAIN_CLAIM_TAG])
    assert (recorded["run_id"], recorded["at_ms"], recorded["reason"]) == ("run-1", NOW * 1000, "performance_drop")


def test_a_claim_within_the_cooldown_skips_and_names_the_run_that_retrained():
    registry = FakeRegistry({RETRAIN_CLAIM_TAG: claim_at(int(NOW * 1000) - 2 * HOUR_MS)})
    outcome = claim_retrain(registry, "iris", "run-2", "drift", 24, settle_s=0, now=lambda: NOW)
    assert not outcome.won and registry.writes == 0
    assert outcome.reason.startswith("a retrain ran within cooldown_hours 24: cycle run earlier-run claimed it at ")


def test_a_claim_older_than_the_cooldown_or_unreadable_does_not_hold_a_retrain_back():
    for old in (claim_at(int(NOW * 1000) - 25 * HOUR_MS), "not json", json.dumps({"at_ms": 1})):
        registry = FakeRegistry({RETRAIN_CLAIM_TAG: old})
        assert claim_retrain(registry, "iris", "run-3", "drift", 24, settle_s=0, now=lambda: NOW).won


def test_cooldown_zero_never_holds_back_but_is_still_one_claim():
    assert not in_cooldown(Claim(int(NOW * 1000), "r", "u", "n"), int(NOW * 1000), 0)
    assert in_cooldown(Claim(int(NOW * 1000), "r", "u", "n"), int(NOW * 1000) + HOUR_MS - 1, 1)


def test_cycles_claiming_at_the_same_moment_elect_exactly_one():
    import mlflow.exceptions  # noqa: F401  (the resolver imports it on first use; not inside the race)

    registry = FakeRegistry()
    contenders = 4
    checked = threading.Barrier(contenders, timeout=60)
    original = registry.get_registered_model
    reads = {}

    def get_registered_model(name):
        """Every contender passes the cooldown check before any writes: the worst interleaving."""
        model = original(name)
        me = threading.current_thread().name
        reads[me] = reads.get(me, 0) + 1
        if reads[me] == 1:
            checked.wait()
        return model

    registry.get_registered_model = get_registered_model
    outcomes = {}

    def contend(index):
        outcomes[index] = claim_retrain(registry, "iris", f"run-{index}", "drift", 24, settle_s=0.3, now=lambda: NOW)

    threads = [threading.Thread(target=contend, args=(i,), name=f"cycle-{i}") for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    registry.get_registered_model = original
    winners = [i for i, outcome in outcomes.items() if outcome.won]
    assert len(outcomes) == contenders and len(winners) == 1
    losers = [outcome for outcome in outcomes.values() if not outcome.won]
    assert all(o.reason == f"cycle run run-{winners[0]} claimed this retrain at the same time" for o in losers)
    assert read_claim(registry, "iris").run_id == f"run-{winners[0]}"


def test_the_version_a_retrain_made_is_added_to_its_claim_only_while_it_holds():
    registry = FakeRegistry()
    outcome = claim_retrain(registry, "iris", "run-1", "drift", 24, settle_s=0, now=lambda: NOW)
    record_version(registry, "iris", outcome.claim, "7")
    assert read_claim(registry, "iris").version == "7"
    registry.tags[RETRAIN_CLAIM_TAG] = claim_at(int(NOW * 1000) + 1, "a-later-run")
    record_version(registry, "iris", outcome.claim, "8")
    assert read_claim(registry, "iris").run_id == "a-later-run" and read_claim(registry, "iris").version is None
