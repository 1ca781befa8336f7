"""Fixtures of the tests that start real processes: the session's `mlflow models serve` and proxy, Spark's JVM.

Every test under this folder counts as ``slow`` (``tests/conftest.py`` marks them).
One upstream (version 2 of the session registry) and one proxy in front of it are
shared by the whole session.
"""

import subprocess
from dataclasses import dataclass

import pytest

from serving.upstreams.servers import serve_command
from tests.helpers.proxies import START_TIMEOUT, serving_env, shared_upstream_proxy
from tests.helpers.support import free_port, start_logged, while_answering


@dataclass
class RunningUpstream:
    url: str
    proc: subprocess.Popen  # `mlflow models serve`, leader of its own process group


@pytest.fixture(scope="session")
def upstream(trained_registry, tmp_path_factory):
    """A real `mlflow models serve` of version 2 of the session registry, on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "serve.log"
    proc = start_logged(
        serve_command("models:/iris/2", port), log, cwd=trained_registry, env=serving_env(trained_registry)
    )
    url = f"http://127.0.0.1:{port}"
    with while_answering(proc, f"{url}/ping", log, "mlflow models serve", START_TIMEOUT):
        yield RunningUpstream(url, proc)


@pytest.fixture(scope="session")
def upstream_url(upstream) -> str:
    return upstream.url


@pytest.fixture(scope="session")
def proxy(trained_registry, upstream_url, tmp_path_factory):
    """The proxy with default settings in front of the shared upstream; it reports version 2."""
    with shared_upstream_proxy(trained_registry, tmp_path_factory.mktemp("proxy"), upstream_url) as running:
        yield running


@pytest.fixture(scope="module")
def spark():
    """A local Spark session on two cores, bound to loopback; started once per module, since a JVM start is slow."""
    from steps.batch.spark_engine import spark_session

    with spark_session("local[2]", chunk_size=1000) as session:
        yield session
