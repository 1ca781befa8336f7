"""What a client with the scoring token can choose must not steer the canary's verdict: the version in the path, a request's size.

In process, through the real app (``serving.app``: the handlers, the micro-batching
forwarder and the recorders), with fake model servers and registry
(``tests/helpers/fakes.py``) that both answer every row by its petal size, as two
equally good versions would. The router delivers version 2 in canary steps against
version 1 while balanced clients send one row at a time; then a hostile client sends
rows of one class the way it chooses. ``test_canary.py`` holds the router's own decisions.
"""

import asyncio

import orjson
from aiohttp.test_utils import TestClient, TestServer

from iris_core.resolver import Resolved
from serving.app import create_app
from serving.config import ServingConfig
from serving.rollout.router import Router
from serving.rollout.state import RolloutState
from tests.helpers.fakes import FakeLookup, FakeServer, FakeServers, settle
from tests.helpers.iris import CLASSES, FEATURES
from tests.helpers.open_inference import feature_inputs

ROWS = {
    "setosa": [5.1, 3.5, 1.4, 0.2],
    "versicolor": [5.9, 3.0, 4.2, 1.5],
    "virginica": [6.7, 3.0, 5.2, 2.3],
}


def by_petals(rows) -> list[str]:
    return ["setosa" if row[2] < 2.5 else "versicolor" if row[3] < 1.75 else "virginica" for row in rows]


class Version(FakeServer):
    """A fake model server that answers whole records, as MLflow does, so the Open Inference answer can be built."""

    async def score(self, session, rows, timeout, **options):
        predictions = await super().score(session, rows, timeout, **options)
        return [
            {
                "prediction": p["prediction"],
                "prediction_index": CLASSES.index(p["prediction"]),
                "confidence": 0.9,
                "confidence_scores": {name: 0.9 if name == p["prediction"] else 0.05 for name in CLASSES},
            }
            for p in predictions
        ]


class Versions(FakeServers):
    def __call__(self, target: Resolved) -> Version:
        server = Version(target)
        self.made.append(server)
        return server


def deliver(body, **settings):
    """Run ``body(client, router, servers)`` once version 2's canary has begun against version 1."""
    defaults = {"canary": (10, 100), "canary_step": 3600, "min_requests": 20, "compare_rate": 1.0}
    config = ServingConfig(poll_interval=3600, timeout=5.0, **{**defaults, **settings})

    async def main():
        servers, lookup = Versions(), FakeLookup("1")
        router = Router(config, Resolved("1", "run-1"), lookup, make_upstream=servers)
        router.analysis_interval_s = 0.01
        async with TestClient(TestServer(create_app(config, router))) as client:
            await settle()
            servers.latest("1").answer = by_petals
            servers.latest("1").come_up()
            await settle()
            lookup.points_to("2")
            await router.poll()
            await settle()
            servers.latest("2").answer = by_petals
            servers.latest("2").come_up()
            await settle()
            assert router.rollout.state in (RolloutState.CANARY, RolloutState.BAKING)
            await body(client, router, servers)

    asyncio.run(asyncio.wait_for(main(), timeout=60))


async def balanced(client, requests: int) -> list[str]:
    """``requests`` single-row requests, one of each class in turn: the version that answered each."""
    versions = []
    for number in range(requests):
        row = list(ROWS.values())[number % 3]
        response = await client.post("/predict", json=dict(zip(FEATURES, row)))
        assert response.status == 200
        versions.append(response.headers["X-Model-Version"])
    return versions


async def still_delivering(router, seconds: float = 0.3) -> None:
    """The analysis ran many times over: the delivery is still on its first step, nothing rolled back."""
    await asyncio.sleep(seconds)
    assert router.rollout.state == RolloutState.CANARY, router.rollout.reason
    assert router.events.rollouts_rolled_back == 0


def test_versioned_requests_of_one_class_to_the_candidate_cannot_roll_a_good_version_back():
    """The attack as found: three 5,000-row requests of virginica to /v2/models/iris/versions/2/infer."""

    async def body(client, router, servers):
        versions = await balanced(client, 300)
        await still_delivering(router)
        answers = []
        for _ in range(3):
            response = await client.post(
                "/v2/models/iris/versions/2/infer",
                data=orjson.dumps({"inputs": feature_inputs([ROWS["virginica"]] * 5000)}),
            )
            answers.append((response.status, response.headers["X-Model-Version"]))
        versions += await balanced(client, 60)
        await still_delivering(router)
        assert answers == [(200, "2")] * 3
        counted = sum(router.rollout.checks["class_shift"]["new"].values())
        assert counted == versions.count("2"), "the versioned requests counted for the candidate"

    deliver(body)


def test_requests_a_client_names_the_version_of_never_count_in_the_canary_statistics():
    async def body(client, router, servers):
        candidate = servers.latest("2")
        before = candidate.stats.snapshot()
        response = await client.post(
            "/v2/models/iris/versions/2/infer", data=orjson.dumps({"inputs": feature_inputs([ROWS["setosa"]] * 10)})
        )
        assert response.status == 200
        await settle()
        since = candidate.stats.since(before)
        assert (since.calls, since.rows) == (0, 0), "its call counted for the candidate's errors and latency"
        assert servers.latest("1").scored == [], "it was copied to the previous version for comparison"
        assert router.delivery.classes == ({}, {})

    deliver(body)


def test_large_requests_of_one_class_weigh_one_request_each_so_their_size_cannot_roll_a_good_version_back():
    """At a 99% share nearly every request goes to the candidate: here the size of a request is all the client has."""

    async def body(client, router, servers):
        await balanced(client, 300)
        for _ in range(3):
            response = await client.post(
                "/invocations",
                json={"dataframe_split": {"columns": list(FEATURES), "data": [ROWS["virginica"]] * 5000}},
            )
            assert response.status == 200
        await balanced(client, 60)
        await still_delivering(router)
        assert router.rollout.checks["class_shift"]["tvd"] < 0.1

    deliver(body, canary=(99, 100))


def test_which_requests_go_to_the_canary_follows_no_pattern_a_client_can_aim_at():
    async def body(client, router, servers):
        versions = await balanced(client, 400)
        blocks = [versions[start : start + 100] for start in range(0, 400, 100)]
        assert [block.count("2") for block in blocks] == [10, 10, 10, 10], "exactly the share of each 100"
        positions = [[index for index, version in enumerate(block) if version == "2"] for block in blocks]
        assert len({tuple(p) for p in positions}) > 1, "the same places in every block: a client can aim"

    deliver(body)


def test_copies_the_previous_version_cannot_take_in_time_are_dropped_and_counted_in_metrics():
    """During the bake every request goes to the new version; the previous one, hung, scores none of the copies."""

    async def body(client, router, servers):
        servers.latest("1").delay = 3600
        request = {"dataframe_split": {"columns": list(FEATURES), "data": [ROWS["setosa"]] * 100}}
        for _ in range(80):
            assert (await client.post("/invocations", json=request)).status == 200
        await settle()
        dropped = router.delivery.compare.dropped_rows
        assert dropped > 0 and router.events.compare_dropped_rows == dropped
        text = await (await client.get("/metrics")).text()
        assert f'proxy_canary_copies_dropped_rows_total{{model="iris"}} {float(dropped)}' in text

    deliver(body, canary=(100,), bake=3600)
