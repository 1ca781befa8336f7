"""Which version a rollback picks from the alias history, a person's rollbacks and the proxy's automatic ones alike."""

from hypothesis import given
from hypothesis import strategies as st

from iris_core.alias_history import AliasMove
from registry_tools.aliases import rollback_target


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


def test_an_automatic_rollback_pops_the_stack_like_a_persons():
    history = moves(("gate", "1"), ("gate", "2"), ("promote", "3"), ("auto-rollback", "2"))
    assert rollback_target(history, "2") == "1"
