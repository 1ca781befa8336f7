"""Fixtures of the monitoring tests."""

import functools

import pytest

from tests.helpers.traffic import make_split


@pytest.fixture(scope="session")
def iris_split():
    """``iris_split(seed)``: the pipeline's split and estimator for that seed, made once per session."""
    return functools.cache(make_split)
