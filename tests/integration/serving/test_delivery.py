"""Canary rollouts on real model servers: bad versions rolled back by the proxies themselves, good ones delivered.

Two `python -m serving` proxies follow ``iris@champion`` of one registry, as two replicas
would, under a steady bounded load. The registry holds the session's pipeline-trained
versions (1 and 2 pass the gate; 3 was trained with C=0.3) and three versions registered
here from ``bench/misbehaving_model.py``, each wrapping version 1: one fails on a share of rows
(every call holding a virginica row), one is several times slower, one answers without an
error but swaps versicolor and virginica. The tests run in order, each starting and ending
with the alias on version 1. ``test_canary.py`` pins the same decisions in process.
"""

import shutil
import socket
import subprocess
import time

import pytest

from bench.misbehaving import KINDS, register_misbehaving
from bench.traffic import Traffic
from iris_core.alias_history import alias_history, move_alias
from iris_core.contract import MoveKind, RolloutOutcome, Tag
from tests.helpers.metrics_scrape import sample, scrape
from tests.helpers.proxies import START_TIMEOUT, running_proxy
from tests.helpers.readme import page_command
from tests.helpers.support import wait_until
from tests.helpers.tracking import Registry, clean_env, sqlite_uri

pytestmark = pytest.mark.slow

CANARY_SHARE, CANARY_STEP_S, BAKE_S = 20, 10, 3
CLIENTS = 10  # closed-loop clients: enough that the canary share meets min_requests while a slow one holds some
PROXY_ARGS = (
    "--poll-interval",
    "0.5",
    "--canary",
    f"{CANARY_SHARE},100",
    "--canary-step",
    str(CANARY_STEP_S),
    "--bake",
    str(BAKE_S),
    "--min-requests",
    "30",
    "--compare-rate",
    "0.5",
)


ROLLOUT_PAGE, CANARY_SECTION = "docs/rollout.md", "Canary steps, a bake window, and a rollback by itself"
PAGE_PROMOTE = page_command(ROLLOUT_PAGE, CANARY_SECTION, "registry_tools promote 3")
PAGE_HISTORY = page_command(ROLLOUT_PAGE, CANARY_SECTION, "registry_tools history")
PAGE_SHOW = page_command(ROLLOUT_PAGE, CANARY_SECTION, "registry_tools show 3")


def as_written(registry_dir, command: str) -> subprocess.CompletedProcess:
    """A command line of the manual (docs/rollout.md), typed as is, against this module's registry."""
    env = {**clean_env(), "MLFLOW_TRACKING_URI": sqlite_uri(registry_dir)}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=registry_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def delivery_registry(trained_registry, tmp_path_factory):
    """A copy of the session registry with the three misbehaving versions, champion on version 1."""
    directory = tmp_path_factory.mktemp("delivery-registry")
    shutil.copyfile(trained_registry / "mlflow.db", directory / "mlflow.db")
    uri = sqlite_uri(directory)
    bad = {name: register_misbehaving(uri, directory, "1", **config) for name, config in KINDS.items()}
    client = Registry(uri=uri).client()
    move_alias(client, "iris", "champion", "1", how=MoveKind.ROLLBACK, reason="start the delivery tests on version 1")
    return directory, bad


@pytest.fixture(scope="module")
def proxies(delivery_registry, tmp_path_factory):
    directory, _ = delivery_registry
    workdir = tmp_path_factory.mktemp("delivery")
    with (
        running_proxy(directory, workdir / "a", *PROXY_ARGS) as a,
        running_proxy(directory, workdir / "b", *PROXY_ARGS) as b,
    ):
        yield a, b


@pytest.fixture
def client(delivery_registry):
    return Registry(uri=sqlite_uri(delivery_registry[0])).client()


def champion(client) -> str:
    return str(client.get_registered_model("iris").aliases["champion"])


def rollout(proxy) -> dict:
    return proxy.health()["rollout"] or {}


def promote_under_load(proxies, client, version: str, ended: tuple[str, ...], reason: str):
    """Move the alias to ``version`` under load; wait until both proxies' deliveries of it end in ``ended``."""
    with Traffic([proxy.url for proxy in proxies], threads=CLIENTS) as traffic:
        wait_until(lambda: len(traffic.answers) >= 40, 60, what="the load to start")
        moved_at = time.time()
        move_alias(client, "iris", "champion", version, how=MoveKind.PROMOTE, reason=reason)
        for proxy in proxies:
            wait_until(
                lambda proxy=proxy: rollout(proxy).get("version") == version and rollout(proxy)["state"] in ended,
                START_TIMEOUT + CANARY_STEP_S + BAKE_S,
                what=f"the delivery of version {version} to end in {ended} (log: {proxy.log})",
            )
        time.sleep(1.5)
    return traffic, moved_at


def check_rolled_back(proxies, client, traffic, moved_at: float, bad: str, breach: str) -> None:
    """Rolled back within the canary step, once in the registry, with the figures; failures only from the canary."""
    wait_until(lambda: champion(client) == "1", 30, what="the alias back on version 1")
    autos = [m for m in alias_history(client, "iris", "champion") if m.at_ms >= moved_at * 1000]
    autos = [m for m in autos if m.how == MoveKind.AUTO_ROLLBACK]
    assert len(autos) == 1, autos
    assert (autos[0].from_version, autos[0].to_version, autos[0].by) == (bad, "1", socket.gethostname())
    assert breach in autos[0].reason and f"at {CANARY_SHARE}% of requests" in autos[0].reason
    tags = client.get_model_version("iris", bad).tags
    assert tags[Tag.ROLLOUT_OUTCOME] == RolloutOutcome.ROLLED_BACK and breach in tags[Tag.ROLLOUT_EVIDENCE]
    states = {rollout(proxy)["state"] for proxy in proxies}
    assert "rolled_back" in states and states <= {"rolled_back", "stopped"}
    for proxy in (p for p in proxies if rollout(p)["state"] == "rolled_back"):
        logged = f"ERROR serving.rollout.delivery: rolled back from version {bad} to version 1: canary analysis"
        assert logged in proxy.output()
    for proxy in proxies:
        record = rollout(proxy)
        assert record["at"] - record["started_at"] < CANARY_STEP_S, "rolled back during the canary step"
        during = traffic.since(record["started_at"], proxy.url, until=record["at"] + 1)
        failed = [a for a in during if a.status != 200]
        assert all(a.version == bad and a.status == 502 for a in failed), failed[:5]
        assert len(failed) <= CANARY_SHARE / 100 * len(during) + 2, (len(failed), len(during))
        assert proxy.health()["model"]["version"] == "1"
    late = traffic.since(time.time() - 1.0)
    assert late and all(a.status == 200 and a.version == "1" for a in late)


def test_a_version_that_fails_on_a_share_of_rows_is_rolled_back_once_though_two_proxies_follow_it(
    proxies, client, delivery_registry
):
    bad = delivery_registry[1]["fails"]
    traffic, moved_at = promote_under_load(proxies, client, bad, ("rolled_back", "stopped"), "a failing version")
    check_rolled_back(proxies, client, traffic, moved_at, bad, "error rate")
    assert any(a.status != 200 for a in traffic.answers), "the canary's share did meet the failing version"


def test_a_version_several_times_slower_is_rolled_back_on_its_latency(proxies, client, delivery_registry):
    bad = delivery_registry[1]["slow"]
    traffic, moved_at = promote_under_load(proxies, client, bad, ("rolled_back", "stopped"), "a slow version")
    check_rolled_back(proxies, client, traffic, moved_at, bad, "latency")
    assert all(a.status == 200 for a in traffic.answers)


def test_a_version_that_disagrees_without_errors_is_rolled_back_on_its_disagreement(proxies, client, delivery_registry):
    bad = delivery_registry[1]["disagrees"]
    traffic, moved_at = promote_under_load(proxies, client, bad, ("rolled_back", "stopped"), "a disagreeing version")
    check_rolled_back(proxies, client, traffic, moved_at, bad, "disagreed with the previous version")
    assert all(a.status == 200 for a in traffic.answers)


def test_a_good_version_goes_to_all_traffic_and_is_never_rolled_back_over_repeated_promotions(proxies, client):
    """Version 2 (C=0.5), then version 1 again: each delivery runs its steps and bake and completes."""
    started = time.time()
    for version in ("2", "1"):
        traffic, _ = promote_under_load(proxies, client, version, ("completed", "rolled_back"), "a good version")
        assert {rollout(proxy)["state"] for proxy in proxies} == {"completed"}
        assert all(a.status == 200 for a in traffic.answers)
        assert {a.version for a in traffic.since(time.time() - 1.0)} == {version}
        assert champion(client) == version
    moves = [m for m in alias_history(client, "iris", "champion") if m.at_ms >= started * 1000]
    assert [m.how for m in moves] == ["promote"] * 2, "nothing was rolled back"
    for version in ("2", "1"):
        assert client.get_model_version("iris", version).tags[Tag.ROLLOUT_OUTCOME] == RolloutOutcome.COMPLETED


def test_a_person_moving_the_alias_back_during_a_canary_stops_it_at_once(proxies, client, delivery_registry):
    """The page's promote command, as written, starts a canary of version 3; the alias moves back during it."""
    directory = delivery_registry[0]
    with Traffic([proxy.url for proxy in proxies], threads=CLIENTS) as traffic:
        promoted = as_written(directory, PAGE_PROMOTE)  # version 3: C=0.3, failed the gate, hence --force
        assert promoted.returncode == 0, promoted.stderr
        in_canary = wait_until(
            lambda: [p for p in proxies if rollout(p).get("version") == "3" and rollout(p)["state"] == "canary"],
            START_TIMEOUT,
            interval=0.1,
            what="a canary of version 3",
        )
        move_alias(client, "iris", "champion", "1", how=MoveKind.ROLLBACK, reason="a person stops it")
        stopped_at = time.time()
        for proxy in in_canary:
            wait_until(lambda proxy=proxy: rollout(proxy)["state"] == "stopped", 10, interval=0.1, what="a stop")
            assert rollout(proxy)["at"] - stopped_at < 3, "within a few poll intervals"
        for proxy in proxies:  # one still starting version 3 keeps it warm when it is up, and never switches
            wait_until(
                lambda proxy=proxy: (
                    rollout(proxy)["version"] != "3" or rollout(proxy)["state"] in ("stopped", "superseded")
                ),
                START_TIMEOUT,
                what="every proxy's rollout of version 3 ended",
            )
            assert proxy.health()["model"]["version"] == "1"
        time.sleep(1)
    assert all(a.status == 200 for a in traffic.answers)
    assert {a.version for a in traffic.since(time.time() - 0.8)} == {"1"}
    assert Tag.ROLLOUT_OUTCOME not in client.get_model_version("iris", "3").tags
    assert alias_history(client, "iris", "champion")[0].how == "rollback"
    for command in (PAGE_HISTORY, PAGE_SHOW):  # the page's next two commands, as written
        shown = as_written(directory, command)
        assert shown.returncode == 0 and "version 3" in shown.stdout, shown.stderr


def test_metrics_count_every_rollback_and_stop_on_each_proxy(proxies):
    rolled_back = 0
    for proxy in proxies:
        samples = scrape(proxy.url + "/metrics")
        mine = sample(samples, "proxy_rollouts_total", model="iris", outcome="rolled_back")
        stopped = sample(samples, "proxy_rollouts_total", model="iris", outcome="stopped")
        assert mine + stopped >= 3, (mine, stopped)  # three bad versions, and the person's stop if it saw it
        assert sample(samples, "proxy_rollout_share", model="iris") == 0
        rolled_back += mine
    assert rolled_back >= 3
