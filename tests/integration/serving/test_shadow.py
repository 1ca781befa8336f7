"""``--shadow challenger`` on real model servers: exact counts, nothing reaches a client, evidence the gate reads.

One proxy serves ``iris@champion`` (version 1) and shadows ``iris@challenger``. The
challenger is first a version registered here that swaps versicolor and virginica and
takes a second per call, then one that fails every call holding a virginica row, then
version 3 of the pipeline (C=0.3), which the gate promotes once the proxy has shadowed
enough rows. The tests run in order.
"""

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import time

import pytest
import requests

from bench.misbehaving import register_misbehaving
from bench.traffic import ROWS, Traffic
from iris_core.alias_history import move_alias
from iris_core.contract import MoveKind, Tag
from iris_core.errors import EXIT_OK, EXIT_WAITING
from tests.helpers.metrics_scrape import sample, scrape
from tests.helpers.proxies import START_TIMEOUT, running_proxy, serving_env
from tests.helpers.readme import page_command
from tests.helpers.support import wait_until
from tests.helpers.tracking import REPO, Registry, sqlite_uri

pytestmark = pytest.mark.slow

SHADOW_DELAY_S = 1.0


@pytest.fixture(scope="module")
def shadow_registry(trained_registry, tmp_path_factory):
    directory = tmp_path_factory.mktemp("shadow-registry")
    shutil.copyfile(trained_registry / "mlflow.db", directory / "mlflow.db")
    uri = sqlite_uri(directory)
    bad = {
        "disagrees": register_misbehaving(uri, directory, "1", kind="disagree", delay_s=SHADOW_DELAY_S),
        "fails": register_misbehaving(uri, directory, "1", kind="fail"),
        "large": register_misbehaving(uri, directory, "1", kind="large", answer_bytes=200_000),
    }
    client = Registry(uri=uri).client()
    move_alias(client, "iris", "champion", "1", how=MoveKind.ROLLBACK, reason="start the shadow tests on version 1")
    move_alias(client, "iris", "challenger", bad["disagrees"], how=MoveKind.PROMOTE, reason="shadow it")
    return directory, bad


@pytest.fixture(scope="module")
def proxy(shadow_registry, tmp_path_factory):
    args = ("--poll-interval", "0.5", "--shadow", "challenger", "--shadow-report-interval", "1")
    with running_proxy(shadow_registry[0], tmp_path_factory.mktemp("shadowing"), *args) as running:
        yield running


@pytest.fixture
def client(shadow_registry):
    return Registry(uri=sqlite_uri(shadow_registry[0])).client()


def shadow(proxy) -> dict:
    return proxy.health()["shadow"]


def shadowing(proxy, version: str) -> None:
    wait_until(
        lambda: shadow(proxy)["state"] == "shadowing" and shadow(proxy)["version"] == version,
        START_TIMEOUT,
        what=f"version {version} shadowed (log: {proxy.log})",
    )


def send(proxy, per_class: int) -> list[tuple[int, str, float]]:
    """``per_class`` requests of each class, one at a time: (status, X-Model-Version, seconds) each."""
    answers = []
    with requests.Session() as session:
        for _ in range(per_class):
            for row in ROWS.values():
                response = session.post(f"{proxy.url}/predict", json=row, timeout=30)
                answers.append(
                    (response.status_code, response.headers["X-Model-Version"], response.elapsed.total_seconds())
                )
    return answers


def test_the_shadow_counts_and_agreement_are_what_was_sent_and_its_slowness_never_reaches_a_client(
    proxy, client, shadow_registry
):
    challenger = shadow_registry[1]["disagrees"]
    shadowing(proxy, challenger)
    answers = send(proxy, per_class=30)
    assert {(status, version) for status, version, _ in answers} == {(200, "1")}
    latencies = [seconds for _, _, seconds in answers]
    assert statistics.median(latencies) < SHADOW_DELAY_S / 4
    assert sorted(latencies)[int(0.95 * len(latencies))] < SHADOW_DELAY_S / 2
    wait_until(lambda: shadow(proxy)["rows"] + shadow(proxy)["dropped_rows"] == 90, 60, what="every copy scored")
    seen = shadow(proxy)
    assert (seen["rows"], seen["dropped_rows"], seen["agreement"], seen["error_rate"]) == (90, 0, 0.3333, 0.0)
    assert seen["against"] == "1" and seen["p99_ms"] >= SHADOW_DELAY_S * 1000
    samples = scrape(proxy.url + "/metrics")
    pairs = {
        (live, theirs): sample(samples, "proxy_shadow_rows_total", model="iris", live_class=live, shadow_class=theirs)
        for live, theirs in [("setosa", "setosa"), ("versicolor", "virginica"), ("virginica", "versicolor")]
    }
    assert set(pairs.values()) == {30.0} and sample(samples, "proxy_shadow_errors_total", model="iris") == 0
    assert sample(samples, "proxy_shadow_info", model="iris", version=challenger, against="1") == 1
    wait_until(
        lambda: client.get_model_version("iris", challenger).tags.get(Tag.SHADOW_ROWS) == "90", 30, what="the tags"
    )
    tags = client.get_model_version("iris", challenger).tags
    assert (tags[Tag.SHADOW_AGREEMENT], tags[Tag.SHADOW_ERROR_RATE], tags[Tag.SHADOW_AGAINST]) == (
        "0.3333",
        "0.0000",
        "1",
    )
    assert [key for key in tags if re.fullmatch(r"shadow\.[\w.-]+\.v1", key)], tags


def test_a_failing_shadow_version_counts_errors_and_no_client_sees_one(proxy, client, shadow_registry):
    challenger = shadow_registry[1]["fails"]
    move_alias(client, "iris", "challenger", challenger, how=MoveKind.PROMOTE, reason="shadow a failing one")
    shadowing(proxy, challenger)
    answers = send(proxy, per_class=20)
    assert {(status, version) for status, version, _ in answers} == {(200, "1")}

    def every_copy_scored() -> bool:
        return shadow(proxy)["rows"] + shadow(proxy)["dropped_rows"] == 60

    with contextlib.suppress(TimeoutError):
        wait_until(every_copy_scored, 60)
    assert every_copy_scored(), f"not every copy was scored within 60 s: {shadow(proxy)}"
    assert shadow(proxy)["error_rate"] > 0
    assert sample(scrape(proxy.url + "/metrics"), "proxy_shadow_errors_total", model="iris") > 0


def cpu_per_request(proxy, seconds: float) -> float:
    """Four clients posting /predict for ``seconds``: the proxy's CPU seconds per answer (all 200s from version 1)."""
    before = cpu_seconds(proxy.proc.pid)
    with Traffic([proxy.url], threads=4, pause=0.005, max_seconds=seconds + 30) as traffic:
        time.sleep(seconds)
    spent = cpu_seconds(proxy.proc.pid) - before
    assert {(a.status, a.version) for a in traffic.answers} == {(200, "1")}
    return spent / len(traffic.answers)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_shadow_version_answering_200_kb_a_row_has_every_copy_counted_an_error_and_costs_the_proxy_no_parsing(
    proxy, client, shadow_registry
):
    """Measured before the cap: 55% more proxy CPU per client request (the copies' answers read and parsed on the
    event loop), and every copy taken as agreeing; with it, ~10% (a copy's call, its answer cut at 1 KB a row)."""
    reference = cpu_per_request(proxy, 5)  # shadowing the version before: its copies' answers are small
    challenger = shadow_registry[1]["large"]
    move_alias(client, "iris", "challenger", challenger, how=MoveKind.PROMOTE, reason="shadow one that answers large")
    shadowing(proxy, challenger)
    under_large = cpu_per_request(proxy, 5)
    wait_until(lambda: shadow(proxy)["rows"] > 100, 30, what="copies scored")
    seen = shadow(proxy)
    assert seen["error_rate"] == 1.0, f"answers of 200 KB a row were taken: {seen}"
    assert under_large < 1.3 * reference, (
        f"{under_large * 1000:.2f} ms of proxy CPU per request, {reference * 1000:.2f} ms before"
    )


ROLLOUT_PAGE, SHADOW_SECTION = "docs/rollout.md", "Shadow: evidence before promotion"
PAGE_EVALUATE = page_command(ROLLOUT_PAGE, SHADOW_SECTION, "python -m steps.evaluate")
PAGE_SHOW = page_command(ROLLOUT_PAGE, SHADOW_SECTION, "python -m registry_tools show")
PAGE_MIN_ROWS = int(re.search(r"--min-shadow-rows (\d+)", PAGE_EVALUATE).group(1))


def as_written(registry_dir, command: str) -> subprocess.CompletedProcess:
    """A command line of the manual (docs/rollout.md), typed as is in the repository, against this test's registry."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env=serving_env(registry_dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_gate_waits_for_shadow_evidence_then_promotes_and_the_proxy_serves_the_shadowed_server(
    proxy, client, shadow_registry
):
    """The page's own gate command, run as written: waiting first, promoting once the proxy shadowed enough rows."""
    directory = shadow_registry[0]
    move_alias(client, "iris", "challenger", "3", how=MoveKind.PROMOTE, reason="shadow version 3 before the gate")
    waiting = as_written(directory, PAGE_EVALUATE)
    assert waiting.returncode == EXIT_WAITING, waiting.stderr
    assert client.get_model_version("iris", "3").tags[Tag.GATE_DECISION] == "waiting_for_shadow"
    shadowing(proxy, "3")
    per_class = -(-PAGE_MIN_ROWS // len(ROWS))
    send(proxy, per_class=per_class)
    rows = str(per_class * len(ROWS))
    wait_until(lambda: client.get_model_version("iris", "3").tags.get(Tag.SHADOW_ROWS) == rows, 60, what="tags")
    passed = as_written(directory, PAGE_EVALUATE)
    assert passed.returncode == EXIT_OK, passed.stderr
    expected = f"shadow agreement 1.0000 >= min_shadow_agreement 0.95 over {rows} rows against champion version 1"
    assert expected in passed.stdout
    assert str(client.get_registered_model("iris").aliases["champion"]) == "3"
    wait_until(lambda: proxy.health()["model"]["version"] == "3", 30, what="version 3 served")
    starts = [line for line in proxy.output().splitlines() if "starting the model server for models:/iris/3" in line]
    assert len(starts) == 1, "the shadow's model server took over: nothing was started again"
    assert proxy.predict().headers["X-Model-Version"] == "3"
    shown = as_written(directory, PAGE_SHOW)
    assert shown.returncode == 0, shown.stderr  # the page's challenger was version 2; here, a champion before
