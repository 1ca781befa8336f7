"""promote and rollback against a real registry of versions made by the training code.

The ``registry`` fixture holds iris v1 and v2 (both passed the gate; champion = v2) and
v3 (gate failed), with the gate's moves of champion (-> 1, 1 -> 2) in the history.
"""

import pytest

from iris_core.alias_history import alias_history
from tests.helpers.registry_checks import assert_one_line_error, champion, unchanged


def newest_champion_move(client) -> tuple[str, str, str, str]:
    """The latest move of @champion as (from version, to version, how, reason)."""
    newest = alias_history(client, "iris", "champion")[0]
    return newest.from_version, newest.to_version, newest.how, newest.reason


def test_promote_points_the_alias_at_the_version_and_records_the_move(registry, run):
    client = registry.client()
    result = run("promote", "1", "--reason", "pin the first model")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("moved iris@champion: version 2 -> version 1 (promote by ")
    assert champion(client) == "1"
    assert newest_champion_move(client) == ("2", "1", "promote", "pin the first model")


def test_promote_moves_another_alias_when_asked(registry, run):
    client = registry.client()
    assert run("promote", "1", "--alias", "shadow").exit_code == 0
    assert client.get_registered_model("iris").aliases["shadow"] == 1
    assert champion(client) == "2"
    assert [m.to_version for m in alias_history(client, "iris", "shadow")] == ["1"]


def test_promote_refuses_a_version_whose_gate_failed(registry, run):
    client = registry.client()
    with unchanged(client):
        result = run("promote", "3")
        assert_one_line_error(result, 1, "version 3 failed its gate", "accuracy", "--force")


def test_promote_takes_a_version_the_gate_promoted_below_its_floor(registry, run):
    client = registry.client()
    client.set_model_version_tag("iris", "1", "gate_decision", "promoted_below_floor")
    result = run("promote", "1")
    assert result.exit_code == 0, result.output
    assert champion(client) == "1"


def never_evaluated(client, version: str) -> None:
    """What a version registered by the train step alone looks like: no gate decision."""
    for key in ("gate_decision", "gate_reasons", "evaluation_run_id", "eval_accuracy", "eval_f1_score"):
        client.delete_model_version_tag("iris", version, key)


def test_promote_refuses_a_version_that_was_never_evaluated(registry, run):
    client = registry.client()
    never_evaluated(client, "1")
    with unchanged(client):
        result = run("promote", "1", "--alias", "shadow")
        assert_one_line_error(result, 1, "version 1 was never evaluated", "models:/iris/1", "--force")


def test_promote_with_force_moves_to_a_version_that_was_never_evaluated(registry, run):
    client = registry.client()
    never_evaluated(client, "1")
    assert run("promote", "1", "--force").exit_code == 0
    assert champion(client) == "1"


@pytest.mark.parametrize("ref", ["3", "@challenger"])
def test_promote_with_force_moves_to_a_version_whose_gate_failed(registry, run, ref):
    result = run("promote", ref, "--force")
    assert result.exit_code == 0, result.output
    assert champion(registry.client()) == "3"


def test_promoting_the_version_that_holds_the_alias_changes_nothing_and_says_so(registry, run):
    client = registry.client()
    with unchanged(client):
        result = run("promote", "2")
        assert result.exit_code == 0
        assert result.stdout.strip() == "iris@champion already points to version 2; nothing changed"


def test_promote_dry_run_says_what_would_change_and_changes_nothing(registry, run):
    client = registry.client()
    with unchanged(client):
        result = run("promote", "1", "--dry-run")
        assert result.exit_code == 0
        assert (
            result.stdout.strip()
            == "dry run: would move iris@champion: version 2 -> version 1 (promote); nothing changed"
        )


def test_promote_dry_run_still_refuses_a_version_whose_gate_failed(registry, run):
    assert_one_line_error(run("promote", "3", "--dry-run"), 1, "failed its gate")


def test_promote_creates_an_alias_that_was_not_set(registry, run):
    result = run("promote", "1", "--alias", "canary")
    assert result.exit_code == 0
    assert result.stdout.startswith("moved iris@canary: unset -> version 1")
    move = alias_history(registry.client(), "iris", "canary")[0]
    assert move.from_version is None and move.to_version == "1"


def test_rollbacks_walk_back_through_every_earlier_champion(registry, run):
    client = registry.client()
    assert run("promote", "3", "--force").exit_code == 0
    seen = []
    for _ in range(2):
        result = run("rollback", "--yes", "--reason", "walk back")
        assert result.exit_code == 0, result.output
        seen.append(champion(client))
    assert seen == ["2", "1"]
    assert result.stdout.startswith("moved iris@champion: version 2 -> version 1 (rollback by ")


def test_rollback_with_no_earlier_version_changes_nothing(registry, run):
    client = registry.client()
    assert run("rollback", "--yes").exit_code == 0
    with unchanged(client):
        result = run("rollback", "--yes")
        assert_one_line_error(result, 1, "no earlier version of @champion to roll back to", "nothing changed")


def test_rollback_to_a_chosen_version_moves_there(registry, run):
    client = registry.client()
    assert run("promote", "3", "--force").exit_code == 0
    result = run("rollback", "--to", "1", "--yes", "--reason", "v2 and v3 misbehave")
    assert result.exit_code == 0, result.output
    assert champion(client) == "1"
    assert newest_champion_move(client) == ("3", "1", "rollback", "v2 and v3 misbehave")


def test_rollback_to_a_version_never_live_keeps_the_earlier_ones_reachable(registry, run):
    client = registry.client()
    assert run("rollback", "--to", "3", "--force", "--yes").exit_code == 0
    assert run("rollback", "--yes").exit_code == 0
    assert champion(client) == "2"


def test_rollback_to_a_version_whose_gate_failed_is_refused_without_force(registry, run):
    client = registry.client()
    with unchanged(client):
        assert_one_line_error(run("rollback", "--to", "3", "--yes"), 1, "version 3 failed its gate")


def test_rollback_to_the_current_version_changes_nothing_and_says_so(registry, run):
    client = registry.client()
    with unchanged(client):
        result = run("rollback", "--to", "@champion")
        assert result.exit_code == 0
        assert "already points to version 2; nothing changed" in result.stdout


def test_rollback_dry_run_says_what_would_change_and_changes_nothing(registry, run):
    client = registry.client()
    with unchanged(client):
        result = run("rollback", "--dry-run")
        assert result.exit_code == 0, result.output
        assert (
            result.stdout.strip()
            == "dry run: would move iris@champion: version 2 -> version 1 (rollback); nothing changed"
        )


def test_rollback_without_yes_and_without_a_terminal_is_a_usage_error_that_changes_nothing(registry, run):
    client = registry.client()
    with unchanged(client):
        result = run("rollback", input="y\n")
        assert_one_line_error(result, 2, "no terminal to confirm on: pass --yes", "version 2 -> version 1")


def test_rollback_follows_an_alias_moved_outside_these_tools(registry, run):
    client = registry.client()
    client.set_registered_model_alias("iris", "champion", "3")  # by hand: no history entry
    assert run("rollback", "--yes").exit_code == 0
    assert champion(client) == "2"


def test_rollback_of_an_alias_that_was_never_set_is_not_found(registry, run):
    client = registry.client()
    with unchanged(client):
        assert_one_line_error(
            run("rollback", "--alias", "canary", "--yes"), 1, "has no alias @canary", "no recorded moves"
        )


def test_rollback_to_a_deleted_earlier_version_is_refused(registry, run):
    client = registry.client()
    client.delete_model_version("iris", "1")
    with unchanged(client):
        assert_one_line_error(
            run("rollback", "--yes"), 1, "version 1, which held @champion before, no longer exists", "--to"
        )


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["promote", "7"], 1, "iris has no version 7"),
        (["promote", "@nope"], 1, "iris has no alias @nope (aliases: @challenger, @champion)"),
        (["rollback", "--to", "9", "--yes"], 1, "iris has no version 9"),
        (["--model-name", "roses", "promote", "1"], 1, "no registered model named 'roses'"),
        (["promote", "1", "--model-name", "roses"], 1, "no registered model named 'roses'"),
        (["rollback", "--model-name", "roses", "--yes"], 1, "no registered model named 'roses'"),
        (["promote", "v2"], 2, "'v2' is neither a version number nor @alias"),
        (["promote", "0"], 2, "'0' is neither a version number nor @alias"),
        (["promote"], 2, "Missing argument 'REF'"),
        (["promote", "1", "--alias", "latest"], 2, "'latest' is not a usable alias"),
        (["promote", "1", "--alias", "v1"], 2, "'v1' is not a usable alias"),
        (["promote", "1", "--alias", "a b"], 2, "'a b' is not a usable alias"),
        (["promote", "1", "--reason", "x" * 1001], 2, "at most 1000 characters"),
        (["promote", "1", "--bogus"], 2, "No such option '--bogus'"),
        (["rollback", "--to", "@", "--yes"], 2, "'@' is neither a version number nor @alias"),
        (["demote", "1"], 2, "No such command 'demote'"),
    ],
)
def test_bad_promotions_and_rollbacks_fail_in_one_line_and_change_nothing(registry, run, args, code, fragment):
    client = registry.client()
    with unchanged(client):
        assert_one_line_error(run(*args), code, fragment)
