"""Fixtures of the batch scoring tests: the champion loaded once (the Spark session is ``tests.conftest``'s)."""

import pytest


@pytest.fixture
def champion(registry):
    """The registry's champion (version 2), loaded the way the pandas engine loads it."""
    import mlflow

    return mlflow.pyfunc.load_model("models:/iris/2")
