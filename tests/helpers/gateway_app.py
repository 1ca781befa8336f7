"""Two models behind one app in process, iris (version 2) and wine (version 7), each a model server the test controls."""

import asyncio

import orjson

from iris_core.table.contract import Feature, TableContract
from serving.registry.model_facts import ModelFacts
from serving.rollout.router import Router
from serving.upstreams.servers import Upstream, UpstreamState
from tests.helpers.apps import serve_in_process
from tests.helpers.fakes import IRIS_FACTS

WINE_FEATURES = ("alcohol", "od280/od315 of diluted wines")
WINE = TableContract(tuple(Feature(name) for name in WINE_FEATURES), label="class", classes=("0", "1", "2"))


def wine_facts() -> ModelFacts:
    inputs = orjson.dumps([{"type": "double", "name": name} for name in WINE_FEATURES]).decode()
    return ModelFacts.of({"signature": {"inputs": inputs}, "metadata": {"table_contract": WINE.as_dict()}})


class Model(Upstream):
    """A model server answering each row with ``answer(row)``; ``hold()`` keeps its calls waiting."""

    def __init__(self, version: str, facts, answer):
        super().__init__(version, facts=facts)
        self.state = UpstreamState.READY
        self.invocations_url = "http://in-process/invocations"
        self.calls: list[list] = []
        self.answer = answer
        self._gate: asyncio.Event | None = None

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        self._gate.set()

    async def score(self, session, rows, timeout):
        self.calls.append(list(rows))
        if self._gate is not None:
            await self._gate.wait()
        return [self.answer(row) for row in rows]

    async def check(self, session, timeout):
        return None


IRIS_ANSWER = {
    "prediction": "setosa",
    "prediction_index": 0,
    "confidence": 0.9,
    "confidence_scores": {"setosa": 0.9, "versicolor": 0.05, "virginica": 0.05},
}


def serve(tmp_path, body, **settings):
    def setup(config):
        iris = Router(config, None)
        wine = Router(config.for_model("models:/wine/7"), None)  # as the command line makes one per --model-uri
        iris.live = Model("2", IRIS_FACTS, lambda row: IRIS_ANSWER)
        wine.live = Model("7", wine_facts(), lambda row: 1)
        return [iris, wine], (iris.live, wine.live)

    serve_in_process(tmp_path, setup, body, **settings)
