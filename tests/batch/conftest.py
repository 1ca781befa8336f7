"""Fixtures of the batch scoring tests: the champion loaded once, and one Spark session per module."""

import pytest


@pytest.fixture
def champion(registry):
    """The registry's champion (version 2), loaded the way the pandas engine loads it."""
    import mlflow

    return mlflow.pyfunc.load_model("models:/iris/2")


@pytest.fixture(scope="module")
def spark():
    """A local Spark session on two cores, bound to loopback; started once, since a JVM start is slow."""
    from steps.batch_spark import spark_session

    with spark_session("local[2]", chunk_size=1000) as session:
        yield session
