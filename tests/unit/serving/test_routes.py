"""In process: the routes the proxy answers are the ones its 404 body and ``--help`` name."""

import asyncio
import re
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from serving.app import create_app
from serving.cli import serve
from serving.config import ServingConfig
from serving.observability.monitoring import METRICS_SOCKET
from serving.rollout.router import Router


def app_for(own_metrics_port: bool = False):
    """The proxy's app in front of an upstream it need not reach; /metrics on a listener of its own on request."""
    metrics_socket = socket.create_server(("127.0.0.1", 0)) if own_metrics_port else None
    config = ServingConfig(
        upstream="http://127.0.0.1:1",  # nothing to start, nothing to follow
        metrics_port=metrics_socket.getsockname()[1] if metrics_socket else None,
    )
    app = create_app(config, Router(config, None))
    if metrics_socket is not None:
        app[METRICS_SOCKET] = metrics_socket
    return app


def answered_paths(app) -> set[str]:
    """Every route the app answers, by its first path segment (``/v2/models/{name}/infer`` is ``/v2``)."""
    return {"/" + r.canonical.split("/")[1] for r in app.router.resources()} - {"/{tail}"}


def not_found_body(app) -> dict:
    async def ask():
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/docs")
            assert response.status == 404
            return await response.json()

    return asyncio.run(ask())


@pytest.mark.parametrize("own_metrics_port", [False, True])
def test_the_404_body_names_every_route_the_proxy_answers_on_its_port(own_metrics_port):
    app = app_for(own_metrics_port)
    [named] = not_found_body(app)["details"]
    assert set(named.removeprefix("endpoints: ").split(", ")) == answered_paths(app)
    assert ("/metrics" in named) is not own_metrics_port


def test_help_names_every_route_the_proxy_answers():
    text = " ".join(CliRunner().invoke(serve, ["--help"], terminal_width=200).output.split())
    named = set(re.findall(r"/[a-z]\w*", text.split("Options:")[0]))
    assert answered_paths(app_for()) <= named
