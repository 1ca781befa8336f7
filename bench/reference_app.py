"""The classic in-process serving design that this project replaces, kept as a benchmark reference.

A FastAPI app as the tutorials write it: ``POST /predict`` takes one object of the four
features, pydantic validates it, and the scikit-learn estimator answers in the same
process with ``predict_proba`` on a one-row DataFrame (the estimator was fitted on named
columns). The answer has the shape of the MLflow model's own records. The estimator is
loaded from the registry, so the benchmark compares servers of the very same model.
Run it with ``python -m bench.reference_app --model-uri models:/iris@champion --port 8100``.
"""

import logging

import click

from iris_core.table.iris import IRIS

FEATURES = IRIS.feature_names

_logger = logging.getLogger(__name__)


def load_estimator(model_uri: str):
    """The fitted scikit-learn estimator inside a registered version of the project's pyfunc model."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().estimator


def create_app(estimator):
    """The app around ``estimator``; ``GET /ping`` answers while the process is up."""
    import pandas as pd
    from fastapi import FastAPI
    from pydantic import Field, create_model

    IrisFeatures = create_model("IrisFeatures", **{name: (float, Field(gt=0)) for name in FEATURES})  # noqa: N806

    classes = [str(c) for c in estimator.classes_]
    app = FastAPI(title="Iris classifier (in-process reference)")

    @app.get("/ping")
    def ping() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(features: IrisFeatures) -> dict:
        frame = pd.DataFrame([features.model_dump()], columns=list(FEATURES))
        probabilities = estimator.predict_proba(frame)[0]
        best = int(probabilities.argmax())
        return {
            "prediction": classes[best],
            "prediction_index": best,
            "confidence": float(probabilities[best]),
            "confidence_scores": dict(zip(classes, map(float, probabilities))),
        }

    return app


@click.command(help="Serve the in-process FastAPI reference app for the serving benchmark.")
@click.option("--model-uri", default="models:/iris@champion", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8100, show_default=True)
def main(model_uri, host, port):
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(load_estimator(model_uri))
    _logger.info("serving %s on http://%s:%d", model_uri, host, port)
    uvicorn.run(app, host=host, port=port, workers=1, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
