"""The validation proxy in front of ``mlflow models serve`` (``python -m serving --help``).

Endpoints:

- ``POST /invocations``: MLflow's scoring protocol as MLflow 3.17 reads it (JSON
  ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, ``text/csv`` or
  Parquet; ``serving.protocols.scoring``), validated here and forwarded to the live upstream;
  answers ``{"predictions": [...]}``.
- ``POST /predict``: one object with the four features; answers one prediction object.
- ``GET /health``: healthy (200) or degraded (503), the live version and readiness; with the
  model, upstream and rollout state too, which need the token when ``--api-token`` is set.
- ``GET /ready``: 200 only when the live upstream answers the canary row correctly.
- ``GET /ping``: 200 while the proxy runs. ``GET /version``: MLflow's version, as MLflow answers it.
- ``/v2/...``: the Open Inference Protocol (KServe V2): health, metadata from the model's
  signature, and infer, versioned or not (``serving.protocols.open_inference``).

Scoring answers carry ``X-Model-Version`` and ``X-Request-Id``; errors are JSON
``{"error_code", "message", "details"}`` (under ``/v2``, the protocol's ``{"error"}``).
"""
