"""The router's rollout state machine, in process against fake model servers and a fake registry.

Promote, warm rollback, a version that fails to start, an alias deleted, a registry
that does not answer, keep-warm eviction and a live server that dies: each as the
router's own decisions, without a process or a network. ``test_managed.py`` shows the
same moves on real `mlflow models serve` processes.
"""

import asyncio

from iris_core.resolver import Resolved
from serving.config import ServingConfig
from serving.registry.base import RegistryState
from serving.rollout.router import Router
from serving.rollout.state import RolloutState
from serving.upstreams.servers import UpstreamState
from tests.helpers.fake_router import make_router, run
from tests.helpers.fakes import FakeLookup, FakeServers, settle, until


async def promote(router, servers, lookup, version: str) -> None:
    lookup.points_to(version)
    await router.poll()
    await settle()
    if servers.latest(version).starting:
        servers.latest(version).come_up()
        await settle()


def test_a_promotion_starts_the_new_version_beside_the_live_one_and_switches_only_once_it_is_ready():
    async def body(router, servers, lookup):
        lookup.points_to("2")
        await router.poll()
        await settle()
        assert router.live.version == "1" and router.rollout.state == RolloutState.STARTING
        servers.latest("2").come_up()
        await settle()
        assert router.live is servers.latest("2")
        assert router.rollout.state == RolloutState.SWITCHED and router.rollout.cold is True
        assert [u.version for u in router.warm] == ["1"] and not servers.latest("1").stopped
        assert router.events.rollouts_done == 1

    run(body)


def test_a_rollback_to_the_warm_version_is_a_switch_without_a_start():
    async def body(router, servers, lookup):
        await promote(router, servers, lookup, "2")
        first = servers.latest("1")
        lookup.points_to("1")
        await router.poll()
        assert router.live is first, "the switch happens within the poll itself"
        assert router.rollout.state == RolloutState.SWITCHED and router.rollout.cold is False
        assert len(servers.made) == 2 and first.starts == 1
        assert [u.version for u in router.warm] == ["2"]

    run(body)


def test_a_version_is_served_by_the_live_or_a_ready_warm_upstream_and_by_none_otherwise():
    async def body(router, servers, lookup):
        await promote(router, servers, lookup, "2")
        await promote(router, servers, lookup, "3")
        assert router.upstream_for("3") is router.live
        assert router.upstream_for("2") is servers.latest("2")
        assert router.upstream_for("1") is None, "version 1 was stopped beyond --keep-warm"
        assert router.loaded_versions() == ["3", "2"]
        servers.latest("2").die()
        await settle()
        assert router.upstream_for("2") is None and router.loaded_versions() == ["3"]

    run(body)


def test_a_version_that_fails_to_start_leaves_the_live_one_serving_and_is_retried_after_a_backoff():
    async def body(router, servers, lookup):
        lookup.points_to("2")
        await router.poll()
        await settle()
        servers.latest("2").fail_to_start("canary row answered 'virginica', expected 'setosa'")
        await settle()
        assert router.live.version == "1" and router.live.state == UpstreamState.READY
        assert router.rollout.state == RolloutState.FAILED and "canary row" in router.rollout.error
        assert router.rollout.retry_in_s == 0.05 and router.events.rollouts_failed == 1
        await router.poll()
        await settle()
        assert len(servers.made) == 2, "no new try before the backoff has passed"
        await asyncio.sleep(0.06)
        await router.poll()
        await settle()
        assert len(servers.made) == 3 and router.rollout.attempt == 2

    run(body)


def test_moving_the_alias_back_after_a_failed_rollout_abandons_it():
    async def body(router, servers, lookup):
        lookup.points_to("2")
        await router.poll()
        await settle()
        servers.latest("2").fail_to_start()
        await settle()
        lookup.points_to("1")
        await router.poll()
        assert router.rollout.state == RolloutState.ABANDONED and router.live.version == "1"

    run(body)


def test_a_deleted_alias_keeps_the_live_version_serving_and_says_so():
    async def body(router, servers, lookup):
        lookup.points_to(None)
        await router.poll()
        await settle()
        assert router.live.version == "1" and len(servers.made) == 1
        assert router.registry["state"] == RegistryState.ALIAS_MISSING

    run(body)


def test_a_registry_that_does_not_answer_keeps_the_live_version_serving_and_says_so():
    async def body(router, servers, lookup):
        lookup.down = True
        await router.poll()
        assert router.live.version == "1"
        assert router.registry["state"] == RegistryState.UNREACHABLE and "unreachable" in router.registry["message"]
        lookup.points_to("1")
        await router.poll()
        assert router.registry["state"] == RegistryState.OK

    run(body)


def test_keep_warm_stops_the_oldest_version_beyond_the_limit():
    async def body(router, servers, lookup):
        await promote(router, servers, lookup, "2")
        await promote(router, servers, lookup, "3")
        assert router.live.version == "3"
        assert [u.version for u in router.warm] == ["2"]
        assert servers.latest("1").stopped and not servers.latest("2").stopped

    run(body)


def test_with_nothing_kept_warm_the_previous_version_stops_after_the_switch():
    async def body():
        router, servers, lookup = make_router(keep_warm=0)
        await router.start(None)
        await settle()
        servers.latest("1").come_up()
        await settle()
        await promote(router, servers, lookup, "2")
        assert router.warm == [] and servers.latest("1").stopped
        await router.close()

    asyncio.run(asyncio.wait_for(body(), timeout=10))


def test_the_alias_moving_on_while_a_version_starts_keeps_that_version_warm_as_superseded():
    async def body(router, servers, lookup):
        lookup.points_to("2")
        await router.poll()
        await settle()
        lookup.points_to("3")
        await router.poll()  # one start at a time: version 3 waits for version 2's
        await settle()
        servers.latest("2").come_up()
        await settle()
        assert router.live.version == "1" and [u.version for u in router.warm] == ["2"]
        servers.latest("3").come_up()
        await settle()
        assert router.live.version == "3"

    run(body)


def test_a_live_server_that_dies_is_started_again_after_a_backoff():
    async def body(router, servers, lookup):
        live = servers.latest("1")
        live.die()
        await settle()
        assert live.state == UpstreamState.DOWN and router.live is live
        await asyncio.sleep(0.02)
        await settle()
        assert live.starts == 2 and router.events.restarts == 1
        live.come_up()
        await settle()
        assert live.state == UpstreamState.READY

    run(body)


def test_restart_waits_grow_across_a_crash_loop_and_go_back_to_the_first_only_after_the_server_stayed_up():
    async def body(router, servers, lookup):
        router.restart_stable_s = 0.3
        live = servers.latest("1")
        waits = []
        for _ in range(4):  # it comes up, and dies at once: a crash loop
            live.die()
            await settle()
            waits.append(router.restart_in_s)
            await until(lambda: live.starting)
            live.come_up()
            await settle()
        assert waits == [0.01, 0.02, 0.04, 0.04], "doubling up to the cap, never back to the first in the loop"
        assert live.starts == 5 and router.events.restarts == 4
        await asyncio.sleep(0.35)  # this time it stays up longer than restart_stable_s
        live.die()
        await settle()
        assert router.restart_in_s == 0.01

    run(body)


def test_close_stops_every_server_the_router_started():
    async def body():
        router, servers, lookup = make_router()
        await router.start(None)
        await settle()
        servers.latest("1").come_up()
        await settle()
        await promote(router, servers, lookup, "2")
        lookup.points_to("3")
        await router.poll()
        await settle()
        await router.close()
        assert all(server.stopped for server in servers.made) and lookup.closed

    asyncio.run(asyncio.wait_for(body(), timeout=10))


def test_poll_now_reads_the_registry_at_once_instead_of_at_the_end_of_the_poll_interval():
    async def body(router, servers, lookup):
        lookup.points_to("2")
        await settle()
        assert len(servers.made) == 1, "the poll interval is an hour: nothing polled yet"
        router.poll_now()
        await settle()
        assert servers.latest("2").starting and router.rollout.state == RolloutState.STARTING

    run(body)


def test_prompts_during_a_poll_make_one_more_poll_after_it_never_two_at_once():
    async def body(router, servers, lookup):
        polls, running, most = [], 0, 0
        resolve = lookup.resolve_async

        async def slow_resolve(model=None):
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.05)
            polls.append(model)
            running -= 1
            return await resolve(model)

        lookup.resolve_async = slow_resolve
        router.poll_now()
        await asyncio.sleep(0.01)
        for _ in range(5):  # while the first poll runs
            router.poll_now()
        await asyncio.sleep(0.3)
        assert len(polls) == 2 and most == 1

    run(body)


def test_a_router_follows_the_alias_it_serves_and_the_one_it_shadows_and_none_when_pinned():
    lookup = FakeLookup("1")
    following = Router(ServingConfig(shadow="challenger"), Resolved("1", "run-1"), lookup, make_upstream=FakeServers())
    pinned = Router(ServingConfig(pin=True), Resolved("1", "run-1"), lookup, make_upstream=FakeServers())
    assert following.follows("champion") and following.follows("challenger") and not following.follows("staging")
    assert not pinned.follows("champion")
