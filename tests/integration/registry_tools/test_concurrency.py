"""Two promotions racing each other: the alias ends on one of the two and both moves are in the history."""

from iris_core.alias_history import alias_history
from tests.helpers.registry_checks import champion, start_cli


def test_two_promotion_processes_racing_leave_the_alias_on_one_and_both_moves_in_history(registry):
    racers = {
        version: start_cli("--tracking-uri", registry.uri, "promote", version, "--force", "--reason", f"race {version}")
        for version in ("1", "3")
    }
    for version, proc in racers.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (version, out, err)
        assert out.startswith("moved iris@champion: ") and f"-> version {version} (promote by " in out
    client = registry.client()
    newest_two = alias_history(client, "iris", "champion")[:2]
    assert sorted(m.reason for m in newest_two) == ["race 1", "race 3"]
    assert champion(client) in {"1", "3"}
