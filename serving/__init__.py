"""The validation proxy in front of ``mlflow models serve`` (``python -m serving --help``).

Endpoints:

- ``POST /invocations``: MLflow's scoring protocol (JSON ``dataframe_split``,
  ``dataframe_records``, ``instances``, ``inputs``, or ``text/csv``), validated here and
  forwarded to the live upstream; answers ``{"predictions": [...]}``.
- ``POST /predict``: one object with the four features; answers one prediction object.
- ``GET /health``: healthy (200) or degraded (503), with the model, upstream and rollout state.
- ``GET /ready``: 200 only when the live upstream answers the canary row correctly.
- ``GET /ping``: 200 while the proxy runs. ``GET /version``: MLflow and model versions.

Scoring answers carry ``X-Model-Version`` and ``X-Request-Id``; errors are JSON
``{"error_code", "message", "details"}``.
"""
