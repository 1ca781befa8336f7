"""The real app in process with a rule-based fake model as version 1: score rows, then send feedback on the answers."""

import orjson

from serving.rollout.router import Router
from serving.upstreams.servers import Upstream, UpstreamState
from tests.helpers.apps import TOKEN, serve_in_process
from tests.helpers.fakes import IRIS_FACTS
from tests.helpers.iris import CLASSES, FEATURES

SETOSA, VERSICOLOR, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]


class RuleModel(Upstream):
    """A model server that answers at once, by petal size, as version ``version``."""

    def __init__(self, version: str):
        super().__init__(version, facts=IRIS_FACTS)
        self.state = UpstreamState.READY

    async def score(self, session, rows, timeout):
        def record(row):
            index = 0 if row[2] < 2.5 else 1 if row[3] < 1.75 else 2
            scores = {name: 0.9 if i == index else 0.05 for i, name in enumerate(CLASSES)}
            return {
                "prediction": CLASSES[index],
                "prediction_index": index,
                "confidence": 0.9,
                "confidence_scores": scores,
            }

        return [record(row) for row in rows]


def serve(tmp_path, body, **settings):
    """Run ``body(client, router)`` against the real app, a RuleModel as version 1 behind it."""

    def setup(config):
        router = Router(config, None)
        router.live = RuleModel("1")
        return router, (router,)

    defaults = {"model_uris": ("models:/iris/1",), "feedback_log": str(tmp_path / "feedback.jsonl")}
    serve_in_process(tmp_path, setup, body, **{**defaults, **settings})


async def score(client, rows, request_id=None):
    headers = {**TOKEN, **({"X-Request-Id": request_id} if request_id else {})}
    response = await client.post(
        "/invocations", json={"dataframe_split": {"columns": list(FEATURES), "data": rows}}, headers=headers
    )
    assert response.status == 200
    return response.headers["X-Request-Id"], [p["prediction"] for p in (await response.json())["predictions"]]


async def send(client, body, headers=TOKEN):
    response = await client.post(
        "/feedback", data=orjson.dumps(body), headers={**headers, "Content-Type": "application/json"}
    )
    return response.status, await response.json()
