"""``POST /webhooks/mlflow``: MLflow's registry webhooks, taken as a prompt to ask the registry now.

A tracking server with a SQL store sends a delivery when an alias is set or deleted
(``model_version_alias.created`` / ``.deleted``; ``registry_tools webhook create``
subscribes the proxy). The proxy checks it exactly as MLflow 3.17 signs it
(``mlflow/webhooks/delivery.py``): HMAC-SHA256 with the webhook's secret over
``<X-MLflow-Delivery-Id>.<X-MLflow-Timestamp>.<body>``, base64, sent as ``v1,<signature>``
in ``X-MLflow-Signature``. A signed delivery for an alias a served model follows (or
shadows) makes that model's router poll the registry at once instead of at its next poll.

A delivery never says which version to serve: the router reads the registry as on every
poll, and the registry stays the one source of truth. So a forged or replayed delivery
can at worst cause an extra poll, and only a signed one gets even that far:

- unsigned, badly signed, or stamped more than ``TOLERANCE_S`` from the proxy's clock:
  401, nothing changes (MLflow's retries resend the same stamp within about two minutes);
- a body over ``MAX_BODY_BYTES`` (an alias event is about 150 bytes): 413, not read;
- a delivery id already taken within the tolerance (a replay, or MLflow's retry of one
  whose answer it lost): 200, not acted on again.

Nothing of a delivery (its body, the model or alias it names) is logged or echoed; the
log says only why one was refused, once a minute at most, with a count. The route is behind
this signature, not the scoring token, which MLflow cannot send; without a secret there is
no route at all (404).
"""

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from aiohttp import web

from iris_core.contract import ALIAS_WEBHOOK_ACTIONS, ALIAS_WEBHOOK_ENTITY, WEBHOOK_PATH
from serving.errors import HttpError

_logger = logging.getLogger(__name__)

# MLflow's headers and signature scheme (mlflow/webhooks/constants.py)
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"

TOLERANCE_S = 300  # a delivery stamped further than this from now (either way) is refused
MAX_BODY_BYTES = 16 * 1024
REMEMBERED_DELIVERIES = 4096  # delivery ids kept to answer a replay without acting on it
REFUSALS_LOG_INTERVAL_S = 60.0  # refused deliveries are logged once per interval, with a count
_DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Refused(HttpError):
    """A delivery that is not provably MLflow's and recent: 401, whatever else is wrong with it."""

    def __init__(self, message: str):
        super().__init__(401, "UNAUTHORIZED", message)


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` MLflow sends with a delivery (``_generate_hmac_signature`` in 3.17)."""
    signed = b".".join((_raw(delivery_id), _raw(timestamp), body))
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(secret: str, delivery_id: str | None, timestamp: str | None, signed: str | None, body: bytes, now: float):
    """The delivery's id when ``secret`` signed it and its stamp is within ``TOLERANCE_S`` of ``now``; else Refused.

    ``signed`` may list several space-separated signatures (as the Standard Webhooks
    convention MLflow follows allows, for a secret being rotated); one that matches is enough.
    """
    check_stamp(delivery_id, timestamp, signed, now)
    expected = _digest(signature(secret, delivery_id, timestamp, body))
    if not any(hmac.compare_digest(expected, _digest(candidate)) for candidate in signed.split()):
        raise Refused("the delivery's signature does not match the webhook secret")
    return delivery_id


def check_stamp(delivery_id: str | None, timestamp: str | None, signed: str | None, now: float) -> None:
    """What can be refused before the body is read: headers missing or malformed, or a stale stamp."""
    if not (delivery_id and timestamp and signed):
        raise Refused(f"a delivery needs {DELIVERY_ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
    if not _DELIVERY_ID.fullmatch(delivery_id) or not _TIMESTAMP.fullmatch(timestamp):
        raise Refused(f"{DELIVERY_ID_HEADER} or {TIMESTAMP_HEADER} is not one MLflow sends")
    if abs(now - int(timestamp)) > TOLERANCE_S:
        raise Refused(f"the delivery is stamped more than {TOLERANCE_S} s from the proxy's clock")


def _digest(value: str) -> bytes:
    """The raw HMAC of a ``v1,<base64>`` signature; empty for anything else, so it matches nothing."""
    version, _, encoded = value.partition(",")
    if version != SIGNATURE_VERSION:
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _raw(header: str) -> bytes:
    return header.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class AliasEvent:
    """What an alias delivery says: the model, the alias, and whether it was set (created) or deleted."""

    name: str
    alias: str
    action: str


def alias_event(body: bytes) -> AliasEvent | None:
    """The alias event in a delivery's body (MLflow's ``{entity, action, timestamp, data}``); None for another event.

    Raises ValueError for a body that is not such a delivery.
    """
    try:
        delivery = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(delivery, dict) or not isinstance(delivery.get("data"), dict):
        raise ValueError("the body is not an MLflow webhook delivery")
    if delivery.get("entity") != ALIAS_WEBHOOK_ENTITY or delivery.get("action") not in ALIAS_WEBHOOK_ACTIONS:
        return None
    name, alias = delivery["data"].get("name"), delivery["data"].get("alias")
    if not (isinstance(name, str) and isinstance(alias, str)):
        raise ValueError("the alias event names no model or alias")
    return AliasEvent(name, alias, delivery["action"])


class WebhookReceiver:
    """Checks each delivery and prompts the routers of the model it names; remembers recent delivery ids."""

    def __init__(self, secret: str, routers: Iterable, body_timeout: float, clock: Callable[[], float] = time.time):
        self._secret = secret
        self._routers: dict[str, list] = collections.defaultdict(list)  # by served model name
        for router in routers:
            self._routers[router.model.name].append(router)
        self._body_timeout = body_timeout
        self._clock = clock
        self._taken: collections.OrderedDict[str, float] = collections.OrderedDict()  # delivery id -> its stamp
        self._refused, self._refusal_logged_at = 0, -REFUSALS_LOG_INTERVAL_S

    async def receive(self, request: web.Request) -> web.Response:
        try:
            outcome = await self._receive(request)
        except HttpError as exc:
            self._log_refusal(exc)
            response = web.json_response(exc.body(), status=exc.status)
            if exc.status == 413:
                response.force_close()  # the rest of the body is not read
            return response
        return web.json_response({"status": outcome})

    def _log_refusal(self, exc: HttpError) -> None:
        """One line per ``REFUSALS_LOG_INTERVAL_S`` at most: anyone can send refused deliveries, as many as they like."""
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSALS_LOG_INTERVAL_S:
            more = f" ({self._refused - 1} more refused since the last such line)" if self._refused > 1 else ""
            _logger.warning("webhook delivery refused (%s): %s%s", exc.status, exc.message, more)
            self._refused, self._refusal_logged_at = 0, now

    async def _receive(self, request: web.Request) -> str:
        headers = request.headers
        now = self._clock()
        delivery_id, timestamp = headers.get(DELIVERY_ID_HEADER), headers.get(TIMESTAMP_HEADER)
        signed = headers.get(SIGNATURE_HEADER)
        check_stamp(delivery_id, timestamp, signed, now)  # before the body is read
        body = await self._read(request)
        verify(self._secret, delivery_id, timestamp, signed, body, now)
        if not self._first_time(delivery_id, int(timestamp), now):
            return "duplicate"
        try:
            event = alias_event(body)
        except ValueError as exc:
            raise HttpError(400, "BAD_DELIVERY", str(exc)) from None
        prompted = [r for r in self._routers.get(event.name, ()) if r.follows(event.alias)] if event else []
        for router in prompted:
            router.poll_now()
        if prompted:
            _logger.info("webhook delivery %s: polling the registry now", delivery_id)
        return "polling" if prompted else "ignored"

    async def _read(self, request: web.Request) -> bytes:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise _too_large()
        body = bytearray()
        try:
            async with asyncio.timeout(self._body_timeout):
                async for chunk in request.content.iter_any():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise _too_large()
        except TimeoutError:
            raise HttpError(408, "REQUEST_TIMEOUT", "the delivery's body did not arrive in time") from None
        return bytes(body)

    def _first_time(self, delivery_id: str, stamp: int, now: float) -> bool:
        """Remember the id until its stamp is out of the tolerance (a replay after that is refused as stale)."""
        while self._taken and (
            len(self._taken) >= REMEMBERED_DELIVERIES or next(iter(self._taken.values())) < now - TOLERANCE_S
        ):
            self._taken.popitem(last=False)
        if delivery_id in self._taken:
            return False
        self._taken[delivery_id] = stamp
        return True


def _too_large() -> HttpError:
    return HttpError(413, "REQUEST_TOO_LARGE", f"a webhook delivery is at most {MAX_BODY_BYTES} bytes")


async def _method_not_allowed(request: web.Request) -> web.Response:
    exc = HttpError(405, "METHOD_NOT_ALLOWED", f"{WEBHOOK_PATH} takes POST", headers={"Allow": "POST"})
    return web.json_response(exc.body(), status=405, headers=exc.headers)


def install(app: web.Application, config, routers: Iterable) -> WebhookReceiver | None:
    """``POST /webhooks/mlflow`` when a webhook secret is set (before the catch-all route); nothing otherwise."""
    if not config.webhook_secret:
        return None
    receiver = WebhookReceiver(config.webhook_secret, routers, float(config.body_timeout))
    resource = app.router.add_resource(WEBHOOK_PATH)
    resource.add_route("POST", receiver.receive)
    resource.add_route("*", _method_not_allowed)
    return receiver
