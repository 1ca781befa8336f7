"""The Open Inference Protocol's endpoints in the real app, in process, with model servers the test controls.

What needs the app but not a real model server: V2 requests join the same micro-batches
as ``/invocations``, a versioned infer goes to that version's upstream (or is a 404
naming the loaded versions), the token, the metrics and the prediction log, the
protocol's error shape, and metadata from each version's signature.
"""

import asyncio
import json

import orjson

from serving.rollout.router import Router
from serving.upstreams.servers import Upstream, UpstreamState
from tests.helpers.apps import serve_in_process
from tests.helpers.fakes import IRIS_FACTS
from tests.helpers.iris import CLASSES, FEATURES
from tests.helpers.metrics_scrape import scrape_app
from tests.helpers.open_inference import feature_inputs

TOKEN = {"Authorization": "Bearer t0ken"}
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
INFER = "/v2/models/iris/infer"


class Scorer(Upstream):
    """A model server answering every row with full records as ``version``; ``hold()`` keeps calls waiting."""

    def __init__(self, version: str):
        super().__init__(version, facts=IRIS_FACTS)
        self.state = UpstreamState.READY
        self.calls: list[list[list[float]]] = []
        self._gate: asyncio.Event | None = None

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        self._gate.set()

    async def score(self, session, rows, timeout, counted=True):
        self.calls.append(list(rows))
        if self._gate is not None:
            await self._gate.wait()
        return [_record(row) for row in rows]


def _record(row):
    index = 0 if row[2] < 2.5 else 1 if row[3] < 1.75 else 2
    scores = {name: (0.8 if i == index else 0.1) for i, name in enumerate(CLASSES)}
    return {"prediction": CLASSES[index], "prediction_index": index, "confidence": 0.8, "confidence_scores": scores}


def serve(tmp_path, body, **settings):
    """Run ``body(client, live, warm)``: version 2 live, version 1 warm."""

    def setup(config):
        router = Router(config, None)
        live, warm = Scorer("2"), Scorer("1")
        router.live, router.warm = live, [warm]
        return router, (live, warm)

    serve_in_process(tmp_path, setup, body, **settings)


def _proxy_of(client):
    """The app's ``serving.app.Proxy``: the object behind its /invocations handler."""
    route = next(r for r in client.server.app.router.routes() if r.resource.canonical == "/invocations")
    return route.handler.__self__


def infer_body(rows=ROWS, **extra) -> bytes:
    return orjson.dumps({"inputs": feature_inputs(rows), **extra})


def test_v2_infer_and_invocations_requests_join_the_same_micro_batch(tmp_path):
    async def body(client, live, warm):
        live.hold()
        first = asyncio.ensure_future(
            client.post("/invocations", json={"dataframe_records": [dict(zip(FEATURES, ROWS[0]))]}, headers=TOKEN)
        )
        while not live.calls:
            await asyncio.sleep(0.01)
        v2 = asyncio.ensure_future(client.post(INFER, data=infer_body(), headers=TOKEN))
        mlflow = asyncio.ensure_future(
            client.post(
                "/invocations", json={"dataframe_split": {"columns": list(FEATURES), "data": ROWS}}, headers=TOKEN
            )
        )
        forwarder = _proxy_of(client).default.forwarder
        while forwarder.requests_sent + len(forwarder._queue) < 3:  # both are queued behind the first
            await asyncio.sleep(0.01)
        assert len(live.calls) == 1, "the upstream is busy: both wait for the next batch"
        live.release()
        answers = [await request for request in (first, v2, mlflow)]
        assert [answer.status for answer in answers] == [200, 200, 200]
        assert live.calls[1] == ROWS + ROWS, "one upstream call carried the V2 request and the MLflow one"
        outputs = {o["name"]: o["data"] for o in (await answers[1].json())["outputs"]}
        assert outputs["prediction"] == ["setosa", "virginica"] and outputs["prediction_index"] == [0, 2]

    serve(tmp_path, body)


def test_a_versioned_infer_is_answered_by_that_version_live_or_warm_and_404_names_the_loaded_ones(tmp_path):
    async def body(client, live, warm):
        for version, scorer in (("1", warm), ("2", live)):
            response = await client.post(f"/v2/models/iris/versions/{version}/infer", data=infer_body(), headers=TOKEN)
            assert response.status == 200 and response.headers["X-Model-Version"] == version
            assert (await response.json())["model_version"] == version and scorer.calls[-1] == ROWS
        unversioned = await client.post(INFER, data=infer_body(), headers=TOKEN)
        assert unversioned.headers["X-Model-Version"] == "2"
        missing = await client.post("/v2/models/iris/versions/3/infer", data=infer_body(), headers=TOKEN)
        assert missing.status == 404
        assert await missing.json() == {"error": "version '3' is not loaded; loaded versions: 2, 1"}
        assert len(live.calls) + len(warm.calls) == 3, "the 404 reached no model server"

    serve(tmp_path, body)


def test_v2_requests_are_counted_logged_and_labelled_like_the_other_scoring_requests(tmp_path):
    async def body(client, live, warm):
        response = await client.post(INFER, data=infer_body(id="mine"), headers={**TOKEN, "X-Request-Id": "req-7"})
        assert response.status == 200 and response.headers["X-Request-Id"] == "req-7"
        assert (await response.json())["id"] == "mine"
        refused = await client.post(INFER, data=infer_body([[5.1, 3.5, 1.4, -1]]), headers=TOKEN)
        assert refused.status == 400 and refused.headers["X-Model-Version"] == "2"
        samples = await scrape_app(client)
        assert (
            samples[("proxy_requests_total", (("code", "200"), ("endpoint", "/v2/models/infer"), ("model", "iris")))]
            == 1
        )
        assert (
            samples[("proxy_requests_total", (("code", "400"), ("endpoint", "/v2/models/infer"), ("model", "iris")))]
            == 1
        )
        assert samples[("proxy_predictions_total", (("class", "setosa"), ("model", "iris")))] == 1

    serve(tmp_path, body)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(r["request_id"], r["model_version"], r["prediction"]) for r in records] == [
        ("req-7", "2", "setosa"),
        ("req-7", "2", "virginica"),
    ]


def test_infer_needs_the_token_and_health_and_metadata_do_not(tmp_path):
    async def body(client, live, warm):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await client.post(INFER, data=infer_body(), headers=headers)
            assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert set(await response.json()) == {"error"}
        for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/iris", "/v2/models/iris/ready"):
            assert (await client.get(path)).status == 200, path
        assert live.calls == []

    serve(tmp_path, body)


def test_metadata_comes_from_what_each_loaded_version_is(tmp_path):
    async def body(client, live, warm):
        current = await (await client.get("/v2/models/iris")).json()
        assert current["versions"] == ["2", "1"] and [t["name"] for t in current["inputs"]] == list(FEATURES)
        older = await client.get("/v2/models/iris/versions/1")
        assert older.status == 200 and (await older.json())["outputs"][3]["parameters"]["classes"] == list(CLASSES)
        gone = await client.get("/v2/models/iris/versions/5")
        assert gone.status == 404 and "loaded versions: 2, 1" in (await gone.json())["error"]

    serve(tmp_path, body)


def test_every_refusal_is_the_protocols_short_json_error_without_the_request(tmp_path):
    secret = "s3cr3t-" + "x" * 64

    async def body(client, live, warm):
        cases = [
            (INFER, b"{not json " + secret.encode(), 400),
            (INFER, orjson.dumps({"inputs": [{"name": secret, "shape": [1], "datatype": "FP64", "data": [1]}]}), 400),
            (INFER, infer_body([[5.1, 3.5, 1.4, 0.2]] * 10_001), 413),
            (INFER, b"x" * (1024 * 1024 + 1), 413),
            ("/v2/models/other/infer", infer_body(), 404),
        ]
        for path, data, status in cases:
            response = await client.post(path, data=data, headers=TOKEN)
            text = await response.text()
            assert response.status == status, text
            assert set(orjson.loads(text)) == {"error"} and len(text) < 1000 and secret not in text
            assert "Traceback" not in text
        for path in ("/v2/models/iris/versions/1/nothing", "/v2/repository/index"):
            response = await client.get(path)
            assert response.status == 404 and set(await response.json()) == {"error"}

    serve(tmp_path, body)


def test_readiness_follows_the_model_server(tmp_path):
    async def body(client, live, warm):
        live.state = UpstreamState.DOWN
        server = await client.get("/v2/health/ready")
        model = await client.get("/v2/models/iris/ready")
        assert (server.status, await server.json()) == (503, {"ready": False})
        assert (model.status, await model.json()) == (503, {"name": "iris", "ready": False})
        assert (await client.get("/v2/models/iris/versions/1/ready")).status == 200
        assert (await client.get("/v2/health/live")).status == 200

    serve(tmp_path, body)


def test_server_metadata_names_the_project_and_needs_no_installed_package(tmp_path, monkeypatch):
    import importlib.metadata

    async def body(client, live, warm):
        installed = await (await client.get("/v2")).json()
        version = importlib.metadata.version("iris-mlops")
        assert installed == {"name": "iris-mlops", "version": version, "extensions": ["binary_tensor_data"]}

        def not_installed(name):
            raise importlib.metadata.PackageNotFoundError(name)

        monkeypatch.setattr(importlib.metadata, "version", not_installed)  # as in the image, which copies the code
        assert (await (await client.get("/v2")).json())["version"] == "unknown"

    serve(tmp_path, body)
