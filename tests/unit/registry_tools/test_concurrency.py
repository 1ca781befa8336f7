"""Two promotions racing each other: the alias ends on one of the two and both moves are in the history."""

import threading

from iris_core.alias_history import alias_history
from iris_core.refs import Ref
from registry_tools.promotion import apply, plan_promotion
from tests.helpers.registry_checks import champion


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
