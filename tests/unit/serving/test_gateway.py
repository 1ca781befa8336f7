"""Several models behind one proxy, in process, with model servers the test controls.

Each model follows its own versions with its own contract; the routes without a model
name are the first model's; a name no model has is a 404 that lists the served ones; rows
of different models never share an upstream call; health, readiness and metrics report
each model.
"""

import asyncio

import orjson
from prometheus_client.parser import text_string_to_metric_families

from serving.config import ServingConfig
from tests.helpers.apps import TOKEN
from tests.helpers.gateway_app import WINE_FEATURES, serve
from tests.helpers.iris import FEATURES

IRIS_ROW = dict(zip(FEATURES, (5.1, 3.5, 1.4, 0.2)))
WINE_ROW = dict(zip(WINE_FEATURES, (13.2, 3.1)))


def test_the_routes_without_a_name_are_the_first_models_and_models_name_routes_any(tmp_path):
    async def body(client, iris, wine):
        first = await client.post("/invocations", json={"dataframe_records": [IRIS_ROW]}, headers=TOKEN)
        assert first.status == 200 and (await first.json())["predictions"][0]["prediction"] == "setosa"
        named = await client.post("/models/wine/invocations", json={"dataframe_records": [WINE_ROW]}, headers=TOKEN)
        assert named.status == 200 and await named.json() == {"predictions": [1]}
        assert named.headers["X-Model-Version"] == "7"
        one = await client.post("/models/wine/predict", json=WINE_ROW, headers=TOKEN)
        assert await one.json() == {"prediction": 1}
        wrong = await client.post("/models/wine/invocations", json={"dataframe_records": [IRIS_ROW]}, headers=TOKEN)
        assert wrong.status == 400 and "missing column: alcohol" in (await wrong.json())["details"]

    serve(tmp_path, body)


def test_a_name_no_model_has_is_a_404_listing_the_served_ones_without_echoing_it(tmp_path):
    async def body(client, iris, wine):
        for path in ("/models/s3cr3t/invocations", "/v2/models/s3cr3t/infer", "/v2/models/s3cr3t"):
            send = client.get if path == "/v2/models/s3cr3t" else client.post
            answer = await send(path, json={"dataframe_records": [IRIS_ROW]}, headers=TOKEN)
            text = await answer.text()
            assert answer.status == 404 and "s3cr3t" not in text, path
            assert "served models: iris, wine" in text, path

    serve(tmp_path, body)


def test_a_name_no_model_has_is_answered_and_counted_as_no_models(tmp_path):
    async def body(client, iris, wine):
        answer = await client.post("/models/beer/invocations", json={"dataframe_records": [IRIS_ROW]}, headers=TOKEN)
        assert answer.status == 404 and answer.headers["X-Model-Version"] == "none"
        text = await (await client.get("/metrics")).text()
        counted = {
            s.labels["model"]
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "proxy_requests_total" and s.labels.get("code") == "404"
        }
        assert counted == {""}

    serve(tmp_path, body)


def test_rows_of_different_models_never_share_an_upstream_call(tmp_path):
    async def body(client, iris, wine):
        iris.hold()
        wine.hold()
        waiting = []
        for _ in range(4):
            waiting.append(
                asyncio.ensure_future(
                    client.post("/invocations", json={"dataframe_records": [IRIS_ROW]}, headers=TOKEN)
                )
            )
            waiting.append(
                asyncio.ensure_future(
                    client.post("/models/wine/invocations", json={"dataframe_records": [WINE_ROW]}, headers=TOKEN)
                )
            )
        while len(iris.calls) < 1 or len(wine.calls) < 1:
            await asyncio.sleep(0.01)
        iris.release()
        wine.release()
        assert all(answer.status == 200 for answer in await asyncio.gather(*waiting))
        assert all(len(row) == 4 for call in iris.calls for row in call)
        assert all(len(row) == 2 for call in wine.calls for row in call)
        assert sum(len(call) for call in iris.calls) == sum(len(call) for call in wine.calls) == 4

    serve(tmp_path, body)


def test_health_ready_and_v2_metadata_report_each_model(tmp_path):
    async def body(client, iris, wine):
        health = await (await client.get("/health", headers=TOKEN)).json()
        assert health["status"] == "healthy" and health["version"] == "2"
        assert {name: model["version"] for name, model in health["models"].items()} == {"iris": "2", "wine": "7"}
        ready = await client.get("/ready")
        assert ready.status == 200 and (await ready.json())["models"] == {"iris": "2", "wine": "7"}
        metadata = await (await client.get("/v2/models/wine")).json()
        assert [tensor["name"] for tensor in metadata["inputs"]] == list(WINE_FEATURES)
        wine.invocations_url = None  # its model server stops serving
        assert (await client.get("/ready")).status == 503
        assert (await (await client.get("/ready")).json())["message"].startswith("the model server of wine")

    serve(tmp_path, body)


def test_metrics_and_the_prediction_log_name_the_model(tmp_path):
    async def body(client, iris, wine):
        await client.post("/models/wine/invocations", json={"dataframe_records": [WINE_ROW]}, headers=TOKEN)
        await client.post("/invocations", json={"dataframe_records": [IRIS_ROW]}, headers=TOKEN)
        text = await (await client.get("/metrics")).text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        key = (("code", "200"), ("endpoint", "/invocations"), ("model", "wine"))
        assert samples[("proxy_requests_total", key)] == 1
        assert samples[("proxy_predictions_total", (("class", "1"), ("model", "wine")))] == 1
        assert (
            samples[("proxy_model_info", (("alias", ""), ("model", "wine"), ("name", "wine"), ("version", "7")))] == 1
        )

    serve(tmp_path, body)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert sorted(orjson.loads(line)["model_name"] for line in lines) == ["iris", "wine"]


def test_a_token_read_from_a_file_goes_with_each_models_settings(tmp_path):
    token_file = tmp_path / "api-token"
    token_file.write_text("from-a-file\n")
    token_file.chmod(0o600)
    config = ServingConfig(
        model_uris=("models:/iris@champion", "models:/wine@champion"), api_token_file=str(token_file)
    )
    assert config.api_token == "from-a-file"
    assert all(config.for_model(uri).api_token == "from-a-file" for uri in config.model_uris)
