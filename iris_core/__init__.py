"""What every package of the Iris pipeline shares: the floor that ``steps``, ``registry_tools`` and ``serving`` stand on.

Each concept that crosses a package boundary lives here once: a table's contract, its
value rules and the curated Iris contract (``table``), model references (``refs``), the
registry contract of tag keys, gate verdicts and artifact paths (``contract``), the
prediction-record format (``records``), errors and exit codes (``errors``), the
command-line runner (``command_line``), the tracking-store helpers (``tracking``), the
registry resolver (``resolver``) and what it asks of a registry client, MLflow's or
another (``registry_client``).

It imports nothing of the project and, besides the standard library, only click and (lazily,
inside functions) MLflow, so the serving image and a Spark worker can carry it alone.
"""
