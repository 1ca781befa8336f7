"""Canary steps, the bake window, automatic rollback and shadowing, as the router's own decisions.

In process against fake model servers and a fake registry (``tests/helpers/fakes.py``):
``traffic`` plays the proxy's part for each request (the router chooses the upstream, the
upstream scores, the router observes the answer), and a test makes a version fail, slow
or disagree by what its fake answers, or adds synthetic calls to its counts.
``test_delivery.py`` shows the same on real `mlflow models serve` processes.
"""

import asyncio
import json
import random
import re

import pytest

from iris_core.contract import RolloutOutcome, Tag
from iris_core.resolver import Resolved
from serving.app import ScoredRequest
from serving.config import ServingConfig
from serving.rollout.analysis import MIN_CALLS_FOR_P99
from serving.rollout.router import Router
from serving.rollout.state import RolloutState
from serving.upstreams.forwarding import UpstreamError
from tests.helpers.fakes import FakeLookup, FakeServers, run_router, settle, until

ROWS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]]  # one of each class
CLASSES = ["setosa", "versicolor", "virginica"]


def by_row(rows) -> list[str]:
    return [CLASSES[[r[0] for r in ROWS].index(row[0])] for row in rows]


def rotated(rows) -> list[str]:
    """Each row answered with the next class: the same mix of classes, and every row another class."""
    return [CLASSES[(CLASSES.index(name) + 1) % 3] for name in by_row(rows)]


def make_router(**settings) -> tuple[Router, FakeServers, FakeLookup]:
    servers, lookup = FakeServers(), FakeLookup("1")
    defaults = {"canary": (10, 50, 100), "canary_step": 3600, "bake": 0, "min_requests": 20, "compare_rate": 1.0}
    config = ServingConfig(poll_interval=3600, timeout=1.0, **{**defaults, **settings})
    router = Router(config, Resolved("1", "run-1"), lookup, make_upstream=servers)
    router.analysis_interval_s = 0.01
    router.restart_backoff_s = (0.01, 0.04)
    return router, servers, lookup


def run(body, **settings):
    run_router(lambda: make_router(**settings), body, answer=by_row, timeout=20)


async def traffic(router: Router, requests: int) -> list[tuple[int, str]]:
    """``requests`` scoring requests as the proxy makes them, each of a row drawn from ``ROWS``:
    (status, version that answered) each."""
    seen, rows = [], random.Random(requests)
    for _ in range(requests):
        row = rows.choice(ROWS)
        route = router.choose()
        upstream = route.current() if route is not None else router.live
        try:
            predictions = await upstream.score(None, [row], 1.0)
            status = 200
        except UpstreamError as exc:
            predictions, status = None, exc.status
        router.observe(ScoredRequest("/predict", status, 0.001, [row], predictions, upstream.version, "id"))
        seen.append((status, upstream.version))
    await settle()
    return seen


async def bring_up(router, servers, lookup, version: str = "2", answer=None) -> None:
    """Move the alias to ``version`` and let its model server (answering with ``answer`` when given) come up."""
    lookup.points_to(version)
    await router.poll()
    await settle()
    if answer is not None:
        servers.latest(version).answer = answer
    servers.latest(version).come_up()
    await settle()


async def deliver(router, servers, lookup, version: str = "2") -> None:
    """Move the alias to ``version`` and let its model server come up: the delivery starts."""
    await bring_up(router, servers, lookup, version, answer=by_row)
    assert router.rollout.state == RolloutState.CANARY


def fail_every_third_row(rows):
    fail_every_third_row.calls = getattr(fail_every_third_row, "calls", 0) + 1
    if fail_every_third_row.calls % 3 == 0:
        raise UpstreamError(502, "UPSTREAM_ERROR", "the model server failed to score the rows")
    return by_row(rows)


def test_a_canary_takes_exactly_its_share_of_requests_while_the_previous_version_serves_the_rest():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        seen = await traffic(router, 200)
        assert [version for _, version in seen].count("2") == 20
        assert router.live.version == "1" and router.rollout.share == 10 and router.rollout.step == "1/3"
        assert router.upstream_for("2") is servers.latest("2") and router.loaded_versions() == ["1", "2"]

    run(body)


def test_a_good_version_goes_through_every_step_and_the_bake_to_all_traffic_and_is_not_rolled_back():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        shares = set()
        while router.rollout.state in (RolloutState.CANARY, RolloutState.BAKING):
            shares.add(router.rollout.share)
            await traffic(router, 100)
            await asyncio.sleep(0.01)
        assert router.rollout.state == RolloutState.COMPLETED, router.rollout.reason
        assert shares == {10, 50, 100}
        assert router.live is servers.latest("2") and router.choose() is None
        assert [u.version for u in router.warm] == ["1"], "the previous version stays warm for a rollback"
        assert router.events.rollouts_done == 1 and router.events.rollouts_rolled_back == 0
        await until(lambda: "2" in lookup.tags)
        assert lookup.moves == [] and lookup.tags["2"][Tag.ROLLOUT_OUTCOME] == RolloutOutcome.COMPLETED
        assert set(router.rollout.checks) == {"error_rate", "p50_ms", "p99_ms", "class_shift", "disagreement"}

    run(body, canary_step=0.1, bake=0.1, min_requests=100)


def test_a_failing_version_is_rolled_back_at_once_and_the_alias_moved_back_with_the_evidence():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        bad = servers.latest("2")
        bad.answer = fail_every_third_row
        seen = await traffic(router, 400)
        await until(lambda: router.rollout.state == RolloutState.ROLLED_BACK)
        failed = [status for status, _ in seen if status != 200]
        assert 0 < len(failed) <= 0.1 * len(seen), "only the canary's share of requests could fail"
        assert router.live is servers.latest("1") and router.canary is None and router.choose() is None
        await until(lambda: bad.stopped)
        assert router.events.rollouts_rolled_back == 1
        assert "error rate" in router.rollout.reason and "at 10% of requests" in router.rollout.reason
        await until(lambda: lookup.moves)
        (move,) = lookup.moves
        assert (move.from_version, move.to_version, move.how, move.by) == ("2", "1", "auto-rollback", router.host)
        assert move.reason == router.rollout.reason
        tags = lookup.tags["2"]
        assert tags[Tag.ROLLOUT_OUTCOME] == RolloutOutcome.ROLLED_BACK and tags[Tag.ROLLOUT_BY] == router.host
        assert json.loads(tags[Tag.ROLLOUT_EVIDENCE])["checks"]["error_rate"]["rows"] >= 20
        assert router.rollout.registry == "moved @champion back from version 2 to version 1"
        assert all(version == "1" for _, version in await traffic(router, 20))

    run(body)


def test_a_slow_version_is_rolled_back_on_its_p99_latency():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        for _ in range(MIN_CALLS_FOR_P99):  # synthetic calls: the new version takes ten times as long
            servers.latest("2").stats.observe(0.3, 1, [{"prediction": "setosa"}])
            servers.latest("1").stats.observe(0.03, 1, [{"prediction": "setosa"}])
        await until(lambda: router.rollout.state == RolloutState.ROLLED_BACK)
        assert re.search(r"p99 latency 3\d\d\.\d ms vs 3\d\.\d ms, (9|10)\.\dx \(max 3x\)$", router.rollout.reason)
        assert "p50 latency" in router.rollout.reason

    run(body)


def test_a_version_that_disagrees_on_the_copies_the_previous_one_scored_is_rolled_back():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        servers.latest("2").answer = rotated
        await traffic(router, 600)
        await until(lambda: router.rollout.state == RolloutState.ROLLED_BACK)
        assert router.rollout.reason.endswith("disagreed with the previous version on 100.0% of 60 rows (max 10%)")
        assert len(servers.latest("1").scored) > 1, "the previous version scored copies in the background"

    run(body)


def test_too_few_bad_calls_never_roll_back_a_version():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        for _ in range(19):  # one short of min_requests, all failed
            servers.latest("2").stats.observe(0.01, 1, None)
        await until(lambda: router.rollout.state != RolloutState.CANARY)
        assert router.rollout.state == RolloutState.COMPLETED, router.rollout.reason
        assert router.live.version == "2" and router.events.rollouts_rolled_back == 0

    run(body, canary_step=0.05)


def test_during_the_bake_the_previous_version_stays_up_even_with_nothing_kept_warm_and_takes_over_on_a_breach():
    async def body(router, servers, lookup):
        await bring_up(router, servers, lookup)
        assert router.rollout.state == RolloutState.BAKING and router.live is servers.latest("2")
        assert not servers.latest("1").stopped and router.upstream_for("1") is servers.latest("1")
        servers.latest("2").answer = fail_every_third_row
        await traffic(router, 100)
        await until(lambda: router.rollout.state == RolloutState.ROLLED_BACK)
        assert router.live is servers.latest("1") and not servers.latest("1").stopped

    run(body, canary=(100,), bake=3600, keep_warm=0)


def test_a_rolled_back_version_is_not_tried_again_until_the_alias_moves_to_it_again():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        lookup.writes_fail = True  # the alias cannot be moved back yet
        servers.latest("2").answer = fail_every_third_row
        await traffic(router, 400)
        await until(lambda: router.rollout.state == RolloutState.ROLLED_BACK)
        await until(lambda: router.rollout.registry and "not recorded yet" in router.rollout.registry)
        made = len(servers.made)
        await router.poll()  # the alias still names version 2
        await settle()
        assert len(servers.made) == made and router.live.version == "1" and lookup.moves == []
        lookup.writes_fail = False
        await router.poll()  # the write is tried again
        await until(lambda: lookup.moves)
        assert lookup.answer == "1"
        await router.poll()
        lookup.points_to("2")  # a person moves it to version 2 again
        await router.poll()
        await settle()
        assert len(servers.made) == made + 1 and servers.latest("2").starting

    run(body)


def test_moving_the_alias_back_during_a_canary_stops_it_at_once_and_records_nothing():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        lookup.points_to("1")
        await router.poll()
        assert router.rollout.state == RolloutState.STOPPED and "moved to version 1" in router.rollout.reason
        assert router.live is servers.latest("1") and router.choose() is None
        assert router.events.rollouts_stopped == 1 and lookup.moves == [] and "2" not in lookup.tags
        assert [u.version for u in router.warm] == ["2"]

    run(body)


def test_a_replica_that_finds_the_alias_already_moved_back_leaves_it_as_it_was():
    async def body(router, servers, lookup):
        await deliver(router, servers, lookup)
        lookup.points_to("1")  # another replica moved it; this one has not polled since
        servers.latest("2").answer = fail_every_third_row
        await traffic(router, 400)
        await until(lambda: router.rollout.registry is not None)
        assert router.rollout.state == RolloutState.ROLLED_BACK and lookup.moves == []
        assert router.rollout.registry == "@champion no longer named version 2: left as it was"

    run(body)


@pytest.mark.parametrize("canary, bake, delivers", [((100,), 0, False), ((100,), 5, True), ((20, 100), 0, True)])
def test_only_canary_steps_or_a_bake_window_turn_a_switch_into_a_delivery(canary, bake, delivers):
    async def body(router, servers, lookup):
        await bring_up(router, servers, lookup)
        assert (router.delivery is not None) == delivers
        assert (router.rollout.state == RolloutState.SWITCHED) == (not delivers)

    run(body, canary=canary, bake=bake)


def test_a_shadowed_challenger_scores_copies_of_live_answers_and_its_evidence_reaches_its_tags():
    async def body(router, servers, lookup):
        lookup.points_to("3", alias="challenger")
        await router.shadowing.poll({"1"})
        await settle()
        challenger = servers.latest("3")
        challenger.answer = rotated
        challenger.come_up()
        await settle()
        seen = await traffic(router, 30)
        assert all(status == 200 and version == "1" for status, version in seen)
        await until(lambda: router.shadowing.scorer.counts.get("1") and router.shadowing.scorer.counts["1"].rows == 30)
        shadow = (await router.health())[1]["shadow"]
        assert (shadow["version"], shadow["against"], shadow["rows"], shadow["agreement"]) == ("3", "1", 30, 0.0)
        await until(lambda: Tag.SHADOW_ROWS in lookup.tags.get("3", {}))
        tags = lookup.tags["3"]
        assert tags[Tag.SHADOW_ROWS] == "30" and tags[Tag.SHADOW_AGREEMENT] == "0.0000"
        assert tags[Tag.SHADOW_AGAINST] == "1" and f"shadow.{router.shadowing.id}.v1" in tags

    run(body, canary=(100,), shadow="challenger", shadow_report_interval=0.02)


def test_promoting_the_shadowed_version_takes_over_its_warm_model_server():
    async def body(router, servers, lookup):
        lookup.points_to("3", alias="challenger")
        await router.shadowing.poll({"1"})
        await settle()
        servers.latest("3").come_up()
        await settle()
        made = len(servers.made)
        lookup.points_to("3")
        await router.poll()
        await settle()
        assert len(servers.made) == made and router.live is servers.latest("3")
        assert router.shadowing.upstream is None and not servers.latest("3").stopped

    run(body, canary=(100,), shadow="challenger")


def test_two_proxies_shadowing_one_challenger_each_write_their_own_counts_and_the_summary_sums_them():
    async def body():
        lookup = FakeLookup("1")
        lookup.points_to("3", alias="challenger")
        config = ServingConfig(poll_interval=3600, timeout=1.0, shadow="challenger", shadow_report_interval=0.02)
        proxies = []
        for name, requests in (("pod-a", 10), ("pod-b", 20)):
            servers = FakeServers()
            router = Router(config, Resolved("1", "run-1"), lookup, make_upstream=servers)
            router.shadowing.id = name  # separate processes on separate hosts have separate ids
            await router.start(None)
            await settle()
            servers.latest("1").answer = by_row
            servers.latest("1").come_up()
            await router.shadowing.poll({"1"})
            await settle()
            servers.latest("3").answer = rotated
            servers.latest("3").come_up()
            await settle()
            await traffic(router, requests)
            proxies.append(router)
        await until(lambda: {"shadow.pod-a.v1", "shadow.pod-b.v1"} <= set(lookup.tags.get("3", {})))
        await asyncio.sleep(0.1)  # a report interval more: the later writer's summary saw the other's record
        tags = lookup.tags["3"]
        assert (tags[Tag.SHADOW_ROWS], tags[Tag.SHADOW_AGREEMENT]) == ("30", "0.0000")
        assert sorted(json.loads(tags[key])["rows"] for key in ("shadow.pod-a.v1", "shadow.pod-b.v1")) == [10, 20]
        for router in proxies:
            await router.close()

    asyncio.run(asyncio.wait_for(body(), timeout=20))
