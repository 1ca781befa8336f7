"""The in-process serving design at its fastest, kept as the serving benchmark's reference.

What an engineer tuning one process would write instead of the proxy: aiohttp on uvloop,
the body read with orjson, the four features checked as the proxy checks them (numbers, >
0 and <= 1e6), the scikit-learn estimator's ``predict_proba`` on a one-row NumPy array (no
pandas per request, the feature-name check skipped since the column order is fixed), the
answer in the MLflow model's own record shape. The estimator is loaded from the registry,
so the benchmark compares servers of the very same model. Run it with
``python -m bench.reference_app --model-uri models:/iris@champion --port 8100``.
"""

import logging
import math

import click

from iris_core.table.iris import IRIS

_logger = logging.getLogger(__name__)

FEATURES = IRIS.feature_names
LOW, HIGH = 0.0, 1e6  # the Iris contract's rule on every measurement


def load_estimator(model_uri: str):
    """The fitted scikit-learn estimator inside a registered version of the project's pyfunc model."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().estimator


def create_app(estimator):
    """The app around ``estimator``: ``POST /predict`` (one object of the features), ``GET /ping``."""
    import numpy as np
    import orjson
    from aiohttp import web

    classes = [str(c) for c in estimator.classes_]
    if "feature_names_in_" in vars(estimator):  # fitted on named columns; the rows here come in that order
        del estimator.feature_names_in_

    def refuse(message: str) -> web.Response:
        return web.Response(status=400, body=orjson.dumps({"error": message}), content_type="application/json")

    async def predict(request: web.Request) -> web.Response:
        try:
            document = orjson.loads(await request.read())
            values = [document[name] for name in FEATURES]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return refuse("the body must be a JSON object with the four features")
        for value in values:
            if type(value) not in (int, float) or not (LOW < value <= HIGH) or not math.isfinite(value):
                return refuse("each feature must be a number > 0 and <= 1e6")
        probabilities = estimator.predict_proba(np.array([values], dtype=np.float64))[0]
        best = int(probabilities.argmax())
        answer = {
            "prediction": classes[best],
            "prediction_index": best,
            "confidence": float(probabilities[best]),
            "confidence_scores": dict(zip(classes, probabilities.tolist())),
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/predict", predict)
    app.router.add_get("/ping", ping)
    return app


@click.command(help="Serve the in-process reference app (aiohttp, NumPy) for the serving benchmark.")
@click.option("--model-uri", default="models:/iris@champion", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8100, show_default=True)
def main(model_uri, host, port):
    import uvloop
    from aiohttp import web

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(load_estimator(model_uri))
    _logger.info("serving %s on http://%s:%d", model_uri, host, port)
    web.run_app(app, host=host, port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
