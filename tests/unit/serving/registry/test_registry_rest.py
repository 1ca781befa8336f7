"""The proxy's MLflow-free registry client: credentials and TLS as MLflow's client reads them, and servers that misbehave.

Against a real ``mlflow server``: ``tests/integration/serving/test_registry_rest.py``.
"""

import asyncio
import base64
import ssl
import time

import pytest
from aiohttp import web

from iris_core.errors import NotFound, RegistryUnavailable
from iris_core.resolver import get_model
from serving.registry.rest import Connection, RestRegistryClient
from tests.helpers.support import free_port

# -- credentials and TLS, as MLflow's client reads them ------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.standard_b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_are_taken_as_mlflows_client_takes_them(tmp_path):
    uri = "http://127.0.0.1:5000"
    both = {
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": "s3cret",
        "MLFLOW_TRACKING_TOKEN": "t",
        "HOME": str(tmp_path),
    }
    assert Connection.from_env(uri, both).headers["Authorization"] == basic("alice", "s3cret")
    token = {"MLFLOW_TRACKING_TOKEN": "tok", "HOME": str(tmp_path)}
    assert Connection.from_env(uri, token).headers["Authorization"] == "Bearer tok"
    assert "Authorization" not in Connection.from_env(uri, {"HOME": str(tmp_path)}).headers
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = from-file\n"
    )
    from_file = Connection.from_env(uri, {"HOME": str(tmp_path), "MLFLOW_TRACKING_TOKEN": "tok"})
    assert from_file.headers["Authorization"] == basic("bob", "from-file")
    password_only = {"HOME": str(tmp_path), "MLFLOW_TRACKING_PASSWORD": "env-wins"}
    assert Connection.from_env(uri, password_only).headers["Authorization"] == basic("bob", "env-wins")
    assert "s3cret" not in repr(Connection.from_env(uri, both))


def test_tls_settings_are_mlflows_and_a_contradiction_is_refused():
    uri = "https://mlflow.example.com"
    assert Connection.from_env(uri, {"MLFLOW_TRACKING_INSECURE_TLS": "true"}).ssl is False
    verified = Connection.from_env(uri, {"MLFLOW_TRACKING_INSECURE_TLS": "false"}).ssl
    assert isinstance(verified, ssl.SSLContext) and verified.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(RegistryUnavailable, match="cannot both be set"):
        Connection.from_env(uri, {"MLFLOW_TRACKING_INSECURE_TLS": "1", "MLFLOW_TRACKING_SERVER_CERT_PATH": "/ca.pem"})
    with pytest.raises(RegistryUnavailable, match="must be one of true, false"):
        Connection.from_env(uri, {"MLFLOW_TRACKING_INSECURE_TLS": "yes"})
    with pytest.raises(RegistryUnavailable, match="cannot read the TLS certificates"):
        Connection.from_env(uri, {"MLFLOW_TRACKING_SERVER_CERT_PATH": "/nonexistent/ca.pem"})
    assert Connection.from_env("http://127.0.0.1:5000", {"MLFLOW_HTTP_REQUEST_TIMEOUT": "4"}).timeout_s == 4


# -- servers that are not what they should be ----------------------------------------------------


async def served(app: web.Application | None, port: int, work):
    """``work()`` while ``app`` answers on ``port`` (nothing listens when it is None)."""
    if app is None:
        return await work()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, shutdown_timeout=0.2).start()
    try:
        return await work()
    finally:
        await runner.cleanup()


def get_model_over_rest(app: web.Application | None, timeout: str = "0.5"):
    """The core's ``get_model`` over the REST client, from a thread, as the lookup runs it."""
    import aiohttp

    port = free_port()

    async def work():
        loop = asyncio.get_running_loop()
        connection = Connection.from_env(f"http://127.0.0.1:{port}", {"MLFLOW_HTTP_REQUEST_TIMEOUT": timeout})
        async with aiohttp.ClientSession() as session:
            client = RestRegistryClient(connection, session, loop)
            return await loop.run_in_executor(None, get_model, client, "iris")

    return asyncio.run(served(app, port, work))


def answering(status: int, text: str = "", body: dict | None = None, content_type: str = "text/plain"):
    async def handler(request):
        if body is not None:
            return web.json_response(body, status=status)
        return web.Response(status=status, text=text, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def test_a_json_does_not_exist_is_not_found_but_a_bare_404_is_unavailable():
    mlflow_like = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model with name=iris not found"}
    with pytest.raises(NotFound) as missing:
        get_model_over_rest(answering(404, body=mlflow_like))
    assert missing.value.missing == "model"
    page = "<html>Not Found: RESOURCE_DOES_NOT_EXIST</html>"
    with pytest.raises(RegistryUnavailable, match="answered 404 .* an MLflow server"):
        get_model_over_rest(answering(404, page, content_type="text/html"))


def test_refused_credentials_and_server_errors_are_unavailable_in_one_line():
    with pytest.raises(RegistryUnavailable, match=r"refused the credentials \(401\)"):
        get_model_over_rest(answering(401, "You are not authenticated."))
    with pytest.raises(RegistryUnavailable, match=r"permission denied by the tracking server \(403\)"):
        get_model_over_rest(answering(403, "Permission denied"))
    with pytest.raises(RegistryUnavailable, match="answered 502") as failed:
        get_model_over_rest(answering(502, "Traceback (most recent call last):\n  secret"))
    assert "\n" not in str(failed.value) and "secret" not in str(failed.value)
    with pytest.raises(RegistryUnavailable, match="not a registry answer"):
        get_model_over_rest(answering(200, body={"registered_model": {"aliases": "champion"}}))


def test_a_server_that_accepts_but_never_answers_fails_within_the_deadline():
    async def hang(request):
        await asyncio.sleep(60)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=r"did not answer within 0.5 s"):
        get_model_over_rest(app)
    assert time.monotonic() - started < 5


def test_a_closed_port_is_unreachable_at_once():
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="tracking server unreachable: 127.0.0.1:"):
        get_model_over_rest(None)
    assert time.monotonic() - started < 5
