"""What ``/metrics`` says about the registry: whether it answers, and the monitor's verdicts on the served version.

The router runs in process against a fake registry (``tests.helpers.fakes``) and is read by
``ProxyMetrics`` as it is at scrape time; the alerts of ``deploy/prometheus`` on an unreachable
tracking server and on drift found by the monitor read exactly these samples.
"""

import asyncio
from types import SimpleNamespace

from serving.config import ServingConfig
from serving.observability.metrics import ProxyMetrics
from serving.rollout.router import Router
from tests.helpers.fake_router import run  # a router following @champion (version 1, up), polled by hand
from tests.helpers.fakes import settle
from tests.helpers.metrics_scrape import samples

DRIFTED = {"drift_status": "drift", "performance_status": "no_performance_drop"}


def scraped(router: Router) -> dict[tuple[str, tuple], float]:
    """The samples of a ProxyMetrics reading this router, as a scrape would see them now."""
    proxy = SimpleNamespace(
        services={"iris": SimpleNamespace(name="iris", router=router, forwarder=None)},
        in_flight=0,
        client_disconnects={},
        connections=SimpleNamespace(open=0, refused=0),
    )
    return samples(ProxyMetrics(proxy))


def registry_states(router: Router) -> dict[str, float]:
    return {dict(labels)["state"]: v for (name, labels), v in scraped(router).items() if name == "proxy_registry_state"}


def verdicts(router: Router) -> set[tuple[str, str, str]]:
    return {
        (dict(labels)["version"], dict(labels)["tag"], dict(labels)["status"])
        for (name, labels), v in scraped(router).items()
        if name == "proxy_model_monitor_status" and v == 1
    }


def test_the_registry_state_is_one_for_the_current_state_and_zero_for_the_others():
    async def body(router, servers, lookup):
        await router.poll()
        assert registry_states(router) == {"ok": 1, "unreachable": 0, "alias_missing": 0, "not_used": 0}
        lookup.down = True
        await router.poll()
        assert registry_states(router) == {"ok": 0, "unreachable": 1, "alias_missing": 0, "not_used": 0}
        lookup.points_to(None)
        await router.poll()
        assert registry_states(router)["alias_missing"] == 1 and sum(registry_states(router).values()) == 1

    run(body)


def test_the_monitors_verdicts_on_the_served_version_are_read_at_a_poll():
    async def body(router, servers, lookup):
        await router.poll()
        assert verdicts(router) == set(), "no verdict before the monitor has tagged the version"
        lookup.tags["1"] = {**DRIFTED, "gate_decision": "passed"}
        router.verdicts_refresh_s = 0
        await router.poll()
        assert verdicts(router) == {
            ("1", "drift_status", "drift"),
            ("1", "performance_status", "no_performance_drop"),
        }

    run(body)


def test_verdicts_are_read_again_only_after_the_refresh_interval_and_kept_while_the_registry_is_down():
    async def body(router, servers, lookup):
        lookup.tags["1"] = {"drift_status": "no_drift"}
        await router.poll()
        lookup.tags["1"] = {"drift_status": "drift"}
        await router.poll()
        assert verdicts(router) == {("1", "drift_status", "no_drift")}, "read again before the refresh interval"
        router.verdicts_refresh_s = 0
        lookup.down = True
        await router.poll()
        assert verdicts(router) == {("1", "drift_status", "no_drift")}
        lookup.down = False
        await router.poll()
        assert verdicts(router) == {("1", "drift_status", "drift")}

    run(body)


def test_after_a_switch_only_the_new_versions_verdicts_are_shown():
    async def body(router, servers, lookup):
        lookup.tags["1"] = DRIFTED
        await router.poll()
        lookup.points_to("2")
        await router.poll()
        await settle()
        servers.latest("2").come_up()
        await settle()
        assert router.live.version == "2"
        assert verdicts(router) == set(), "version 1's verdicts are not version 2's"
        lookup.tags["2"] = {"drift_status": "no_drift"}
        await router.poll()
        assert verdicts(router) == {("2", "drift_status", "no_drift")}

    run(body)


def test_a_verdict_value_the_monitor_never_writes_is_shown_as_unknown():
    async def body(router, servers, lookup):
        lookup.tags["1"] = {"drift_status": "x" * 500}
        await router.poll()
        assert verdicts(router) == {("1", "drift_status", "unknown")}

    run(body)


def test_a_proxy_that_uses_no_registry_says_so():
    async def body():
        router = Router(ServingConfig(upstream="http://127.0.0.1:1", timeout=1.0), None, None)
        assert registry_states(router)["not_used"] == 1
        assert verdicts(router) == set()

    asyncio.run(body())
