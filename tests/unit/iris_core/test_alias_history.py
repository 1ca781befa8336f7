"""The alias history in the core: moves recorded in the registry, read back, and the compare-and-set move.

The compare-and-set tests race real clients on a real sqlite registry, as several serving
replicas that all found the same version worse would.
"""

import getpass
import json
import threading
import time

from iris_core.alias_history import alias_history, current_user, move_alias, move_alias_if, parse_history
from iris_core.contract import ALIAS_CLAIM_PREFIX, MoveKind


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


def test_a_compare_and_set_move_happens_when_the_alias_still_points_at_the_expected_version(registry):
    client = registry.client()
    move = move_alias_if(
        client, "iris", "champion", "2", "1", how=MoveKind.AUTO_ROLLBACK, reason="errors 12%", by="host-a", settle_s=0
    )
    assert move is not None and client.get_registered_model("iris").aliases["champion"] == 1
    newest = alias_history(client, "iris", "champion")[0]
    assert (newest.from_version, newest.to_version, newest.how, newest.by, newest.reason) == (
        "2",
        "1",
        "auto-rollback",
        "host-a",
        "errors 12%",
    )
    assert not [key for key in client.get_registered_model("iris").tags if key.startswith(ALIAS_CLAIM_PREFIX)]


def test_a_compare_and_set_move_changes_nothing_when_the_alias_points_elsewhere(registry):
    client = registry.client()
    before = alias_history(client, "iris", "champion")
    assert move_alias_if(client, "iris", "champion", "3", "1", how=MoveKind.AUTO_ROLLBACK, settle_s=0) is None
    assert client.get_registered_model("iris").aliases["champion"] == 2
    assert alias_history(client, "iris", "champion") == before


class SlowAliasWrites:
    """A real client whose alias writes take 0.3 s, as a distant tracking server's may: it widens the race."""

    def __init__(self, client):
        self._client = client

    def set_registered_model_alias(self, *args):
        time.sleep(0.3)
        return self._client.set_registered_model_alias(*args)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_contenders_racing_to_undo_the_same_move_move_the_alias_once(registry):
    """Five replicas with their own clients, released together: one history entry, no claim left behind."""
    before = len(alias_history(registry.client(), "iris", "champion"))
    barrier, results, errors = threading.Barrier(5, timeout=60), [], []

    def contend(number: int) -> None:
        try:
            client = SlowAliasWrites(registry.client())
            barrier.wait()
            results.append(
                move_alias_if(
                    client,
                    "iris",
                    "champion",
                    "2",
                    "1",
                    how=MoveKind.AUTO_ROLLBACK,
                    by=f"replica-{number}",
                    settle_s=0.5,
                )
            )
        except Exception as exc:  # collected: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len([move for move in results if move is not None]) == 1
    client = registry.client()
    history = alias_history(client, "iris", "champion")
    assert len(history) == before + 1 and history[0].how == "auto-rollback"
    assert client.get_registered_model("iris").aliases["champion"] == 1
    assert not [key for key in client.get_registered_model("iris").tags if key.startswith(ALIAS_CLAIM_PREFIX)]


def test_a_contender_that_claims_after_the_winner_moved_finds_the_alias_moved(registry):
    client = registry.client()
    first = move_alias_if(client, "iris", "champion", "2", "1", how=MoveKind.AUTO_ROLLBACK, settle_s=0)
    late = move_alias_if(client, "iris", "champion", "2", "1", how=MoveKind.AUTO_ROLLBACK, settle_s=0)
    assert first is not None and late is None
    assert [m.how for m in alias_history(client, "iris", "champion")].count("auto-rollback") == 1
