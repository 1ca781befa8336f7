"""A model that misbehaves on purpose, registered as a version of ``iris`` (a model from code) by ``bench.misbehaving``.

It wraps a real pipeline-trained version (the ``model`` artifact) and, as its
``model_config`` says, fails, slows down or disagrees with it: the bad versions that a
canary rollout must roll back, in the rollout benchmark and the delivery tests. Clear setosa rows (petal length under 2.5) are always
answered correctly, so every kind passes the proxy's canary row and starts like a good
version; the misbehaviour shows only on live traffic.

- ``fail``: raises for every call holding a row with petal length above ``fail_above``;
- ``slow``: answers as the wrapped version, ``delay_s`` later;
- ``disagree``: swaps versicolor and virginica (same class mix on balanced traffic, every
  such row disagreeing), and answers without an error;
- ``large``: answers as the wrapped version, each row with ``answer_bytes`` (200,000) bytes
  of padding beside its prediction.

``delay_s`` slows any kind down.
"""

import time

import mlflow
from mlflow.models import set_model

SWAPPED = {"versicolor": "virginica", "virginica": "versicolor"}


class Misbehaving(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.inner = mlflow.pyfunc.load_model(context.artifacts["model"])
        self.config = context.model_config or {}

    def predict(self, context, model_input, params=None):
        kind = self.config.get("kind")
        time.sleep(float(self.config.get("delay_s", 0.0)))
        third = model_input.iloc[:, 2]  # petal length (this file imports nothing of the project)
        if kind == "fail" and (third > float(self.config.get("fail_above", 4.5))).any():
            raise ValueError("this version fails on long petals")
        answer = self.inner.predict(model_input)
        if kind == "disagree":
            answer["prediction"] = answer["prediction"].map(lambda name: SWAPPED.get(name, name))
        if kind == "large":
            answer["padding"] = "x" * int(self.config.get("answer_bytes", 200_000))
        return answer


set_model(Misbehaving())
