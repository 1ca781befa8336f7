"""MLflow's registry webhooks at the proxy, in process: the signature check and what a delivery may do.

Deliveries are signed with MLflow 3.17's own signing function
(``mlflow.webhooks.delivery._generate_hmac_signature``), so the check is tested against
MLflow's code, not against a copy of ours. ``test_webhook_delivery.py`` has a real
``mlflow server`` send them to a real proxy.
"""

import asyncio
import json
import logging
import time
import uuid
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from mlflow.webhooks.delivery import _generate_hmac_signature

from iris_core.contract import WEBHOOK_PATH
from serving.app import create_app
from serving.config import ServingConfig
from serving.registry.webhooks import (
    MAX_BODY_BYTES,
    TOLERANCE_S,
    AliasEvent,
    Refused,
    WebhookReceiver,
    alias_event,
    signature,
    verify,
)
from serving.rollout.router import Router

SECRET = "whsec-test-0123456789"
NAME, ALIAS = "iris-secret-name", "champion"


def delivery(name=NAME, alias=ALIAS, action="created", entity="model_version_alias", **data) -> bytes:
    """A body as MLflow's ``_send_webhook_request`` builds it (``json.dumps`` of the delivery)."""
    payload = {"name": name, "alias": alias, **data}
    stamp = "2026-12-03T10:00:00.000000+00:00"
    return json.dumps({"entity": entity, "action": action, "timestamp": stamp, "data": payload}).encode()


def signed_headers(body: bytes, secret: str = SECRET, at: float | None = None, delivery_id: str | None = None) -> dict:
    """The headers MLflow sends with ``body``, signed by MLflow's own function."""
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(time.time() if at is None else at))
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, timestamp, body.decode()),
    }


def check(headers: dict, body: bytes, secret: str = SECRET, now: float | None = None) -> str:
    return verify(
        secret,
        headers.get("X-MLflow-Delivery-Id"),
        headers.get("X-MLflow-Timestamp"),
        headers.get("X-MLflow-Signature"),
        body,
        time.time() if now is None else now,
    )


# -- the signature check: a pure function ---------------------------------------------------------


def test_a_delivery_signed_as_mlflow_signs_it_is_accepted_and_our_signature_is_mlflows():
    body = delivery(version="3")
    headers = signed_headers(body)
    assert check(headers, body) == headers["X-MLflow-Delivery-Id"]
    ours = signature(SECRET, headers["X-MLflow-Delivery-Id"], headers["X-MLflow-Timestamp"], body)
    assert ours == headers["X-MLflow-Signature"]


def test_a_delivery_signed_with_another_secret_is_refused():
    body = delivery()
    with pytest.raises(Refused, match="does not match"):
        check(signed_headers(body, secret="another-secret"), body)


def test_a_body_changed_after_signing_is_refused():
    body = delivery(alias="challenger")
    headers = signed_headers(body)
    with pytest.raises(Refused, match="does not match"):
        check(headers, body.replace(b"challenger", b"champion"))


@pytest.mark.parametrize("header", ["X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature"])
def test_a_delivery_missing_any_of_mlflows_headers_is_refused(header):
    body = delivery()
    headers = signed_headers(body)
    del headers[header]
    with pytest.raises(Refused, match="needs"):
        check(headers, body)


def test_the_signed_id_and_timestamp_cannot_be_swapped_for_others():
    body = delivery()
    headers = signed_headers(body)
    for name, value in (("X-MLflow-Delivery-Id", str(uuid.uuid4())), ("X-MLflow-Timestamp", str(int(time.time()) - 1))):
        with pytest.raises(Refused, match="does not match"):
            check({**headers, name: value}, body)


@pytest.mark.parametrize("skew", [-TOLERANCE_S - 1, TOLERANCE_S + 1, -10 * 86400])
def test_a_delivery_stamped_too_long_ago_or_ahead_is_refused_even_when_signed(skew):
    body, now = delivery(), time.time()
    with pytest.raises(Refused, match="stamped more than"):
        check(signed_headers(body, at=now + skew), body, now=now)


@pytest.mark.parametrize("skew", [-TOLERANCE_S + 1, TOLERANCE_S - 1])
def test_a_delivery_stamped_within_the_tolerance_is_accepted(skew):
    body, now = delivery(), time.time()
    assert check(signed_headers(body, at=now + skew), body, now=now)


@pytest.mark.parametrize(
    "forged",
    ["v2," + "A" * 44, "v1,not base64!", "v1,", "", "   ", "v1," + "A" * 44, "sha256=" + "0" * 64],
)
def test_a_signature_of_another_scheme_or_garbage_is_refused(forged):
    body = delivery()
    headers = {**signed_headers(body), "X-MLflow-Signature": forged}
    with pytest.raises(Refused):
        check(headers, body)


def test_one_matching_signature_among_several_is_enough_as_while_a_secret_is_rotated():
    body = delivery()
    headers = signed_headers(body)
    old = signed_headers(body, secret="old-secret", delivery_id=headers["X-MLflow-Delivery-Id"])
    headers["X-MLflow-Signature"] = f"{old['X-MLflow-Signature']} {headers['X-MLflow-Signature']}"
    assert check(headers, body)


def test_an_alias_event_is_read_from_mlflows_delivery_and_any_other_event_is_none():
    assert alias_event(delivery(version="3")) == AliasEvent(NAME, ALIAS, "created")
    assert alias_event(delivery(action="deleted")) == AliasEvent(NAME, ALIAS, "deleted")
    assert alias_event(delivery(entity="model_version", version="3")) is None
    assert alias_event(delivery(entity="prompt_alias")) is None


# -- the receiver: what a delivery may do ---------------------------------------------------------


class PromptedRouter:
    """A router as the receiver sees one: its model's name, the aliases it follows, and its prompts."""

    def __init__(self, name: str = NAME, aliases=(ALIAS, "challenger")):
        self.model = SimpleNamespace(name=name)
        self.aliases = aliases
        self.prompts = 0

    def follows(self, alias: str) -> bool:
        return alias in self.aliases

    def poll_now(self) -> None:
        self.prompts += 1


def post_all(routers, requests, clock=time.time):
    """Each (body, headers) posted in turn to a receiver in front of ``routers``; the statuses and bodies."""
    receiver = WebhookReceiver(SECRET, routers, body_timeout=1.0, clock=clock)
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, receiver.receive)

    async def send():
        answers = []
        async with TestClient(TestServer(app)) as client:
            for body, headers in requests:
                response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
                answers.append((response.status, await response.json()))
        return answers

    return asyncio.run(send())


def test_a_signed_delivery_for_a_followed_alias_prompts_a_poll_and_anything_else_prompts_nothing():
    router, other = PromptedRouter(), PromptedRouter(name="wine")
    bodies = [delivery(), delivery(action="deleted"), delivery(alias="challenger"), delivery(alias="staging")]
    bodies += [delivery(name="unknown"), delivery(entity="model_version", action="created")]
    answers = post_all([router, other], [(body, signed_headers(body)) for body in bodies])
    assert [body["status"] for _, body in answers] == ["polling"] * 3 + ["ignored"] * 3
    assert router.prompts == 3 and other.prompts == 0


def test_a_delivery_for_one_of_several_served_models_prompts_that_models_router_only():
    iris, wine = PromptedRouter(), PromptedRouter(name="wine")
    body = delivery(name="wine")
    post_all([iris, wine], [(body, signed_headers(body))])
    assert (iris.prompts, wine.prompts) == (0, 1)


def test_an_unsigned_badly_signed_or_stale_delivery_is_401_and_prompts_nothing():
    router, body = PromptedRouter(), delivery()
    unsigned = {k: v for k, v in signed_headers(body).items() if k != "X-MLflow-Signature"}
    forged = signed_headers(body, secret="guessed")
    stale = signed_headers(body, at=time.time() - TOLERANCE_S - 60)
    answers = post_all([router], [(body, unsigned), (body, forged), (body, stale), (body, {})])
    assert [status for status, _ in answers] == [401] * 4
    assert [answer["error_code"] for _, answer in answers] == ["UNAUTHORIZED"] * 4
    assert router.prompts == 0


def test_a_replayed_delivery_is_answered_but_prompts_no_second_poll():
    router, body = PromptedRouter(), delivery()
    headers = signed_headers(body)
    answers = post_all([router], [(body, headers), (body, headers)])
    assert [answer["status"] for _, answer in answers] == ["polling", "duplicate"] and router.prompts == 1


def test_a_body_past_the_limit_is_413_whether_announced_or_chunked_and_prompts_nothing():
    router = PromptedRouter()
    body = delivery(padding="x" * MAX_BODY_BYTES)
    headers = signed_headers(body)

    async def chunked():
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    announced = post_all([router], [(body, headers)])
    streamed = post_all([router], [(chunked(), headers)])
    assert [status for status, _ in announced + streamed] == [413, 413] and router.prompts == 0


def test_a_signed_body_that_is_not_an_mlflow_delivery_is_400_and_prompts_nothing():
    router = PromptedRouter()
    bodies = [b"not json", b"[]", json.dumps({"entity": "model_version_alias", "action": "created"}).encode()]
    bodies.append(delivery(name=None))
    answers = post_all([router], [(body, signed_headers(body)) for body in bodies])
    assert [status for status, _ in answers] == [400] * 4 and router.prompts == 0


def test_nothing_a_delivery_carries_is_logged_or_echoed(caplog):
    router, body = PromptedRouter(), delivery()
    deliveries = [(body, signed_headers(body)), (body, signed_headers(body, secret="guessed")), (b"\x00" + body, {})]
    with caplog.at_level(logging.DEBUG):
        answers = post_all([router], deliveries)
    shown = caplog.text + json.dumps(answers)
    assert NAME not in shown and ALIAS not in shown


# -- the route on the proxy's app -----------------------------------------------------------------


def proxy_app(**settings) -> web.Application:
    config = ServingConfig(upstream="http://127.0.0.1:1", **settings)  # nothing to start or follow
    return create_app(config, Router(config, None))


def statuses(app, requests) -> list[int]:
    """Each (method, headers, body) sent in turn to the app; their statuses."""

    async def send():
        async with TestClient(TestServer(app)) as client:
            return [
                (await client.request(method, WEBHOOK_PATH, data=body, headers=headers)).status
                for method, headers, body in requests
            ]

    return asyncio.run(send())


def test_without_a_secret_the_route_does_not_exist():
    body = delivery()
    assert statuses(proxy_app(), [("POST", signed_headers(body), body)]) == [404]


def test_the_route_is_behind_the_signature_not_the_scoring_token():
    app = proxy_app(webhook_secret=SECRET, api_token="scoring-token")
    body = delivery()
    signed, token = signed_headers(body), {"Authorization": "Bearer scoring-token"}
    assert statuses(app, [("POST", signed, body), ("POST", token, body), ("GET", {}, b"")]) == [200, 401, 405]


def test_a_secret_sets_a_slower_poll_unless_one_is_given():
    assert ServingConfig().poll_interval == 2.0
    assert ServingConfig(webhook_secret=SECRET).poll_interval == 30.0
    assert ServingConfig(webhook_secret=SECRET, poll_interval=5).poll_interval == 5
    assert SECRET not in repr(ServingConfig(webhook_secret=SECRET))


def test_a_flood_of_refused_deliveries_is_logged_once_with_its_count_not_once_each(caplog):
    body = delivery()
    with caplog.at_level(logging.WARNING, logger="serving.registry.webhooks"):
        answers = post_all([PromptedRouter()], [(body, {})] * 50)
    assert [status for status, _ in answers] == [401] * 50
    assert len(caplog.records) == 1 and "refused (401)" in caplog.records[0].getMessage()
