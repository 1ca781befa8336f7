"""Two promotions racing each other: the alias ends on one of the two and both moves are in the history."""

import threading

from iris_core.alias_history import alias_history
from iris_core.refs import Ref
from registry_tools.promotion import apply, plan_promotion
from tests.registry_tools.checks import champion, start_cli


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


def test_promotions_released_at_the_same_instant_all_land_in_the_history(registry):
    """Threads with their own clients start each round together, so the moves really overlap."""
    rounds, versions = 3, ("1", "3")
    errors = []
    for round_number in range(rounds):
        barrier = threading.Barrier(len(versions), timeout=60)

        def promote(version: str) -> None:
            try:
                client = registry.client()
                plan = plan_promotion(
                    client, "iris", Ref(version=version), "champion", reason=f"round {round_number}", force=True
                )
                barrier.wait()
                apply(client, plan)
            except Exception as exc:  # collected: an assertion in a thread would be lost
                errors.append(exc)

        threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors and not any(t.is_alive() for t in threads), errors
        assert champion(registry.client()) in versions
    history = alias_history(registry.client(), "iris", "champion")
    racing = [m for m in history if m.how == "promote"]
    assert sorted((m.reason, m.to_version) for m in racing) == sorted(
        (f"round {r}", v) for r in range(rounds) for v in versions
    )
