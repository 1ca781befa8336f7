"""MLflow's registry webhooks from a real ``mlflow server`` to a real proxy, set up with ``registry_tools webhook``.

The server holds a copy of the session registry (iris v1, v2 champion) and may send
webhooks to loopback over plain http (``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS``,
``MLFLOW_WEBHOOK_ALLOWED_SCHEMES``); its list of webhooks is cached for 1 s instead of
60 s, since these tests create webhooks between moves. The proxy follows ``iris@champion``
with a webhook secret and a poll interval of an hour, so whatever it does within the test
it did because a delivery prompted it. Its ``/health`` tells when it last read the registry
(``registry.checked_at``): a refused delivery must leave that time as it was.
"""

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from cryptography.fernet import Fernet
from mlflow.webhooks.delivery import _generate_hmac_signature

from tests.helpers.proxies import START_TIMEOUT, running_proxy
from tests.helpers.support import mlflow_server, wait_until
from tests.helpers.tracking import REPO, clean_env

pytestmark = pytest.mark.slow

SECRET = "wh-" + uuid.uuid4().hex
POLL_S = 3600  # the proxy's timed poll: never, within a test
WARM_SWITCH_S = 5.0  # a generous bound for delivery + poll + switch to a warm version on a loaded 2-core machine


@pytest.fixture(scope="module")
def server(trained_registry, tmp_path_factory):
    directory = tmp_path_factory.mktemp("webhook-server")
    shutil.copyfile(trained_registry / "mlflow.db", directory / "server.db")
    env = {
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    with mlflow_server(f"sqlite:///{directory / 'server.db'}", directory / "artifacts", env=env) as uri:
        yield uri, directory / "server.db"


@pytest.fixture(scope="module")
def proxy(server, trained_registry, tmp_path_factory):
    uri, _ = server
    env = {"MLFLOW_TRACKING_URI": uri, "SERVING_WEBHOOK_SECRET": SECRET}
    args = ("--poll-interval", str(POLL_S), "--log-dir", str(tmp_path_factory.mktemp("webhook-logs")))
    with running_proxy(trained_registry, tmp_path_factory.mktemp("webhook-proxy"), *args, env=env) as running:
        wait_until(lambda: running.health()["ready"], START_TIMEOUT, what=f"proxy ready (log: {running.log})")
        yield running


@pytest.fixture(scope="module")
def webhook(server, proxy) -> str:
    """The webhook ``registry_tools webhook create`` made for the proxy, as a user would make it."""
    uri, _ = server
    made = registry_tools("webhook", "create", "--url", f"{proxy.url}/webhooks/mlflow", tracking_uri=uri)
    assert made.returncode == 0, made.stderr
    return made.stdout.split()[2]


def registry_tools(*args: str, tracking_uri: str, secret: str = SECRET, stdin=subprocess.DEVNULL):
    env = clean_env({"MLFLOW_TRACKING_URI": tracking_uri, "SERVING_WEBHOOK_SECRET": secret})
    return subprocess.run(
        [sys.executable, "-m", "registry_tools", *args],
        cwd=REPO,
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def client_of(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def served(proxy) -> str:
    return proxy.predict().headers["X-Model-Version"]


def last_read(proxy) -> float:
    """When the proxy last asked the registry where its aliases point."""
    return proxy.health()["registry"]["checked_at"]


def other(version: str) -> str:
    return "1" if version == "2" else "2"


def until_served(proxy, version: str, timeout: float) -> float:
    """Seconds until the proxy answers with ``version``."""
    started = time.monotonic()
    wait_until(lambda: served(proxy) == version, timeout, 0.02, what=f"version {version} served (log: {proxy.log})")
    return time.monotonic() - started


def test_an_alias_move_reaches_the_proxy_by_webhook_and_it_switches_long_before_its_poll(server, proxy, webhook):
    uri, _ = server
    client = client_of(uri)
    tried = registry_tools("webhook", "test", webhook, tracking_uri=uri)
    assert tried.returncode == 0 and tried.stdout.strip() == 'delivered: HTTP 200 {"status": "ignored"}', tried
    before = served(proxy)
    cold = other(before)
    client.set_registered_model_alias("iris", "champion", cold)  # through the server: it sends the webhook
    until_served(proxy, cold, START_TIMEOUT)  # a new model server starts: seconds, where the poll is an hour
    client.set_registered_model_alias("iris", "champion", before)  # back to the version kept warm
    assert until_served(proxy, before, WARM_SWITCH_S) < WARM_SWITCH_S
    assert proxy.output().count("polling the registry now") >= 2


def test_unsigned_badly_signed_stale_or_replayed_deliveries_change_nothing_and_a_signed_one_switches(
    server, proxy, webhook
):
    uri, database = server
    before = served(proxy)
    target = other(before)
    # Moved in the server's database directly: no webhook is sent, and the proxy cannot know yet.
    client_of(f"sqlite:///{database}").set_registered_model_alias("iris", "champion", target)
    read_at = last_read(proxy)
    body = delivery_body("iris", "champion", target)
    now = int(time.time())
    refused = [
        {},  # unsigned
        signed(body, "a-guessed-secret", now),
        signed(body, SECRET, now - 600),  # stale: ten minutes old
        signed(delivery_body("iris", "staging", target), SECRET, now),  # signed for another body
    ]
    answers = [proxy.post("/webhooks/mlflow", data=body, headers=headers) for headers in refused]
    assert [a.status_code for a in answers] == [401] * 4
    time.sleep(1.0)
    assert last_read(proxy) == read_at and served(proxy) == before, "a refused delivery prompted a poll"
    good = signed(body, SECRET, now)
    assert proxy.post("/webhooks/mlflow", data=body, headers=good).json() == {"status": "polling"}
    wait_until(lambda: last_read(proxy) > read_at, 2.0, 0.02, what="the poll the signed delivery prompted")
    until_served(proxy, target, START_TIMEOUT)
    read_at = last_read(proxy)
    assert proxy.post("/webhooks/mlflow", data=body, headers=good).json() == {"status": "duplicate"}
    time.sleep(1.0)
    assert last_read(proxy) == read_at, "a replayed delivery prompted a second poll"


def test_the_webhook_commands_list_refuse_a_second_one_for_the_same_proxy_test_a_wrong_secret_and_delete(
    server, proxy, webhook
):
    uri, _ = server
    url = f"{proxy.url}/webhooks/mlflow"
    listed = registry_tools("webhook", "list", "--json", tracking_uri=uri)
    [mine] = [w for w in json_of(listed) if w["id"] == webhook]
    assert mine["url"] == url and mine["status"] == "ACTIVE" and SECRET not in listed.stdout
    assert mine["events"] == ["model_version_alias.created", "model_version_alias.deleted"]
    again = registry_tools("webhook", "create", "--url", url, tracking_uri=uri)
    assert again.returncode == 1 and f"webhook {webhook}" in again.stderr and "already sends" in again.stderr
    wrong = registry_tools("webhook", "create", "--url", url + "?wrong", tracking_uri=uri, secret="not-the-proxys")
    assert wrong.returncode == 0, wrong.stderr
    wrong_id = wrong.stdout.split()[2]
    try:
        tried = registry_tools("webhook", "test", wrong_id, tracking_uri=uri)
        assert tried.returncode == 1 and tried.stderr.startswith("error: the test delivery failed: HTTP 401")
    finally:
        deleted = registry_tools("webhook", "delete", wrong_id, "--yes", tracking_uri=uri)
    assert deleted.returncode == 0 and deleted.stdout.startswith(f"deleted webhook {wrong_id}")
    assert [w["id"] for w in json_of(registry_tools("webhook", "list", "--json", tracking_uri=uri))] == [webhook]
    unconfirmed = registry_tools("webhook", "delete", webhook, tracking_uri=uri)
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr


def test_a_store_that_sends_no_webhooks_is_refused_in_one_line(tmp_path):
    made = registry_tools(
        "webhook", "create", "--url", "http://127.0.0.1:8000/webhooks/mlflow", tracking_uri=f"sqlite:///{tmp_path}/m.db"
    )
    assert made.returncode == 1 and made.stderr.count("\n") == 1 and "kept and sent by a tracking server" in made.stderr


def json_of(completed) -> list[dict]:
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def delivery_body(name: str, alias: str, version: str) -> bytes:
    """What MLflow's server sends when an alias is set (``mlflow.webhooks.delivery._send_webhook_request``)."""
    data = {"name": name, "alias": alias, "version": version}
    payload = {"entity": "model_version_alias", "action": "created", "timestamp": "2026-12-03T10:00:00+00:00"}
    return json.dumps({**payload, "data": data}).encode()


def signed(body: bytes, secret: str, at: int) -> dict:
    """MLflow's headers for ``body``, signed by MLflow's own function."""
    delivery_id = str(uuid.uuid4())
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(at),
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, str(at), body.decode()),
    }
