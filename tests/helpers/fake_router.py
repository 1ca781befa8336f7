"""A router following ``@champion`` (version 1, up) of a fake registry, over fake model servers, polled by hand."""

from iris_core.resolver import Resolved
from serving.config import ServingConfig
from serving.rollout.router import Router
from tests.helpers.fakes import FakeLookup, FakeServers, run_router


def make_router(keep_warm: int = 1) -> tuple[Router, FakeServers, FakeLookup]:
    servers, lookup = FakeServers(), FakeLookup("1")
    # The poll loop sleeps for an hour: each test polls by hand.
    config = ServingConfig(poll_interval=3600, keep_warm=keep_warm, timeout=1.0)
    router = Router(config, Resolved("1", "run-1"), lookup, make_upstream=servers)
    router.restart_backoff_s = (0.01, 0.04)
    router.rollout_backoff_s = (0.05, 0.2)
    return router, servers, lookup


def run(body):
    run_router(make_router, body)
