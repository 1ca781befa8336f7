"""The alias history: how moves are recorded and read back, and which version a rollback picks."""

import getpass
import json

from hypothesis import given
from hypothesis import strategies as st

from registry_tools.aliases import AliasMove, alias_history, current_user, move_alias, parse_history, rollback_target


def moves(*steps: tuple[str, str]) -> list[AliasMove]:
    """A history, newest first, from (how, to_version) steps given oldest first."""
    history, previous = [], None
    for at_ms, (how, version) in enumerate(steps):
        history.insert(0, AliasMove("champion", previous, version, at_ms, "tester", how))
        previous = version
    return history


def test_no_history_and_no_alias_has_no_rollback_target():
    assert rollback_target([], None) is None


def test_the_first_version_ever_has_nothing_to_roll_back_to():
    assert rollback_target(moves(("gate", "1")), "1") is None


def test_rollback_target_is_the_version_before_the_current_one():
    assert rollback_target(moves(("gate", "1"), ("gate", "2"), ("promote", "3")), "3") == "2"


def test_after_a_rollback_the_next_target_is_further_back_not_the_version_left():
    history = moves(("gate", "1"), ("gate", "2"), ("promote", "3"), ("rollback", "2"))
    assert rollback_target(history, "2") == "1"


def test_a_rollback_to_a_version_never_live_keeps_the_ones_below_reachable():
    history = moves(("gate", "1"), ("gate", "2"), ("rollback", "5"))
    assert rollback_target(history, "5") == "2"


def test_an_alias_moved_by_hand_counts_as_the_newest_move():
    assert rollback_target(moves(("gate", "1"), ("gate", "2")), "7") == "2"


def test_an_alias_deleted_by_hand_rolls_back_to_its_last_holder():
    assert rollback_target(moves(("gate", "1"), ("gate", "2")), None) == "2"


def test_promoting_back_to_an_old_version_is_a_new_step_not_a_rollback():
    history = moves(("gate", "1"), ("gate", "2"), ("promote", "1"))
    assert rollback_target(history, "1") == "2"


@given(st.lists(st.integers(1, 50), min_size=1, max_size=12, unique=True))
def test_repeated_rollbacks_visit_every_earlier_version_in_reverse_order(versions):
    versions = [str(v) for v in versions]
    history = moves(*[("promote", v) for v in versions])
    current, visited = versions[-1], []
    while (target := rollback_target(history, current)) is not None:
        visited.append(target)
        history.insert(0, AliasMove("champion", current, target, len(history), "tester", "rollback"))
        current = target
    assert visited == versions[-2::-1]


def test_parse_history_reads_only_the_alias_asked_for_newest_first_and_skips_junk():
    def tag(alias, at_ms, to):
        move = {
            "alias": alias,
            "from_version": None,
            "to_version": to,
            "at_ms": at_ms,
            "by": "t",
            "how": "gate",
            "extra": 1,
        }
        return f"alias_history.{alias}.{at_ms:013d}.abcd", json.dumps(move)

    tags = dict([tag("champion", 5, "1"), tag("champion", 9, "2"), tag("challenger", 7, "3")])
    tags["alias_history.champion.0000000000010.bad"] = "{not json"
    tags["alias_history.champion.0000000000011.bad"] = json.dumps({"alias": "champion"})
    tags["owner"] = "team"
    assert [(m.at_ms, m.to_version) for m in parse_history(tags, "champion")] == [(9, "2"), (5, "1")]


def test_move_alias_records_from_to_who_how_and_why_in_the_registry(registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    client = registry.client()
    move = move_alias(client, "iris", "champion", "1", how="promote", reason="pin")
    assert client.get_registered_model("iris").aliases["champion"] == 1
    assert alias_history(client, "iris", "champion")[0] == move
    assert (move.from_version, move.to_version, move.by, move.how, move.reason) == ("2", "1", "alice", "promote", "pin")


def test_current_user_survives_a_login_without_a_name(monkeypatch):
    def no_name():
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", no_name)
    assert current_user().startswith("uid-")
