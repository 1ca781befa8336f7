"""The proxy's HTTP face: validate, forward, answer; and the one place every outcome is recorded.

Handlers are plain methods of ``Proxy`` with no middleware on the hot path. Every answer
to ``/invocations`` and ``/predict`` carries ``X-Model-Version`` and ``X-Request-Id``
(the id a label sent to ``/feedback`` names);
every error is a short JSON body ``{"error_code", "message", "details"}``. Paths the
upstream exposes and we do not (``/docs``, ``/openapi.json``...) are simply not routes.
What the server does about connections, slow or malformed requests and ``Expect`` is in
``serving.http_server``; a body must arrive within ``--body-timeout`` of its headers, and
the answer comes within ``--timeout`` of the body. A client that goes away before its
answer is counted apart (``client_disconnects``), not as a request that failed.

``/health`` is in two parts: what a probe needs (``status``, the live ``version``,
``ready``) for anyone, and the details (model servers, pids, sockets, paths, errors) only
with the token when ``--api-token`` is set.
"""

import asyncio
import collections
import hmac
import importlib.metadata
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from iris_core.records import REQUEST_ID
from serving.batching import BatchingForwarder
from serving.errors import HttpError
from serving.feedback_service import feedback_off
from serving.forwarding import DirectForwarder, target_of, unavailable
from serving.http_server import Connections, ServerLimits
from serving.monitoring import install as install_monitoring
from serving.open_inference_routes import install as install_open_inference
from serving.upstream import UpstreamStartError
from serving.validation import Invocation, ValidationError, parse_invocation, predict_row

_logger = logging.getLogger(__name__)

_ROUTES = {
    "/invocations": "POST",
    "/predict": "POST",
    "/feedback": "POST",
    "/health": "GET",
    "/ready": "GET",
    "/ping": "GET",
    "/version": "GET",
    "/v2": "GET",  # the Open Inference Protocol (serving.open_inference_routes)
}
_MLFLOW_VERSION = importlib.metadata.version("mlflow").encode()
CONNECTIONS = web.AppKey("connections", Connections)  # the API listener's (serving.http_server)


@dataclass(slots=True)
class Outcome:
    """What happened to one scoring request; rows and predictions are None when it was refused.

    Not frozen: a frozen dataclass costs ~4 µs more to build, on every request.
    """

    endpoint: str
    status: int
    latency_s: float
    rows: list[list] | None  # in the order of the answering version's contract (``facts``)
    predictions: list | None
    version: str | None
    request_id: str
    ignored: frozenset = frozenset()  # what the request carried that the model does not use (serving.validation)
    facts: object = None  # the answering version's serving.model_facts.ModelFacts, when it answered
    pinned: bool = False  # the client named the version (a versioned V2 infer): never a canary statistic


class Proxy:
    """The handlers, the forwarder they share, and the recorders that observe each outcome."""

    def __init__(self, config, router):
        self.config = config
        self.router = router
        self.session: aiohttp.ClientSession | None = None
        self.forwarder = None
        self.recorders: list[Callable[[Outcome], None]] = [router.observe]  # copies for shadow and canary
        self.feedback = None  # a serving.feedback_service.FeedbackService with --feedback-log
        self.prediction_log = None  # its serving.prediction_log.PredictionLogWriter with --prediction-log
        self.capture = None  # a serving.capture.recorder.Capture with --capture-uri
        self.in_flight = 0  # scoring requests being answered, read by /metrics
        self.client_disconnects: dict[str, int] = collections.defaultdict(int)  # by endpoint, read by /metrics
        access_log = logging.getLogger("serving.access") if config.access_log else None
        self.connections = Connections(ServerLimits.of(config), access_log)
        self._token = config.api_token.encode() if config.api_token else None
        self._limits = config.limits
        self._max_body = config.max_body_bytes
        self._timeout = float(config.timeout)
        self.endpoints: list[str] = list(_ROUTES)  # what a 404 names; create_app lists the app's own routes
        self._body_timeout = float(config.body_timeout)

    # -- scoring ----------------------------------------------------------------------------

    async def invocations(self, request: web.Request) -> web.Response:
        return await self.score(request, _INVOCATIONS)

    async def predict(self, request: web.Request) -> web.Response:
        return await self.score(request, _PREDICT)

    async def score(self, request: web.Request, protocol) -> web.Response:
        """One scoring request in any protocol: ``protocol`` chooses the upstream, parses, answers and refuses.

        It has ``endpoint`` (the metrics' label), ``upstream(request)`` (None for the live
        one), ``parse(request, body, limits, facts)`` (rows and what was ignored, checked
        against the contract of the version that is to answer), ``answer(request, parsed,
        scored)`` and ``refuse(http_error)``.
        """
        started = time.perf_counter()
        self.in_flight += 1
        supplied = request.headers.get("X-Request-Id")
        request_id = supplied if supplied and REQUEST_ID.fullmatch(supplied) else os.urandom(8).hex()
        live = self.router.live
        version = live.version if live is not None else "none"
        rows = predictions = facts = None
        ignored, pinned = frozenset(), False
        try:
            self._authorize(request)
            upstream = protocol.upstream(request)
            pinned = upstream is not None
            body = await self.read_body(request)
            deadline = asyncio.get_running_loop().time() + self._timeout  # the answer comes by then
            if upstream is None:
                upstream = self.router.choose()  # the canary route for its share of requests, else None: the live one
            checked = target_of(upstream, self.router.live)  # whose contract the rows must fit
            if checked is None or checked.facts is None:
                raise unavailable()
            version = checked.version  # an error says which version refused it
            parsed = protocol.parse(request, body, self._limits, checked.facts)
            rows, ignored = parsed.rows, parsed.ignored
            scored = await self.forwarder.predict(rows, upstream, deadline=deadline, checked=checked)
            predictions, version, facts = scored.predictions, scored.version, scored.facts
            status, response = 200, protocol.answer(request, parsed, scored)
        except HttpError as exc:
            status, response = exc.status, protocol.refuse(exc)
        except ConnectionError:  # the client went away while its body was arriving
            status, response = None, None
        except Exception as exc:
            _log_failure(f"request {request_id}", exc)
            status = 500
            response = protocol.refuse(HttpError(500, "INTERNAL_ERROR", "the proxy failed to handle the request"))
        self.in_flight -= 1
        if response is None or request.transport is None:  # nobody is left to answer
            return self.client_left(protocol.endpoint, request_id)
        response.headers["X-Model-Version"] = version
        response.headers["X-Request-Id"] = request_id
        latency = time.perf_counter() - started
        self.record(protocol.endpoint, status, latency, rows, predictions, version, request_id, ignored, facts, pinned)
        return response

    async def read_body(self, request: web.Request) -> bytes:
        """The whole body, refused from its Content-Length when too large and cut off after ``--body-timeout``."""
        if (request.content_length or 0) > self._max_body:
            raise _too_large(self._max_body)
        try:
            if request.content.is_eof():  # it came with the headers, as small bodies do: no timer needed
                return await request.read()
            async with asyncio.timeout(self._body_timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(self._max_body) from None
        except TimeoutError:
            raise HttpError(
                408,
                "REQUEST_TIMEOUT",
                f"the body did not arrive within {self._body_timeout:g} s",
                headers={"Connection": "close"},
            ) from None

    def client_left(self, endpoint: str, request_id: str) -> web.Response:
        """Counted apart from the answered requests (not a 5xx); logged once, without a traceback."""
        self.client_disconnects[endpoint] += 1
        _logger.info("request %s to %s: the client disconnected before its answer", request_id, endpoint)
        return web.Response(status=499)  # never sent: the connection is gone

    async def feedback_labels(self, request: web.Request) -> web.Response:
        """``POST /feedback``: true labels of scored rows, behind the same token as scoring."""
        status = 500
        try:
            self._authorize(request)
            if self.feedback is None:
                raise feedback_off()
            body = await self.read_body(request)
            accepted = await self.feedback.receive(request.headers.get("Content-Type"), body)
            status, response = 200, json_response(accepted)
        except HttpError as exc:
            status, response = exc.status, http_error_response(exc)
        except ConnectionError:
            return self.client_left("/feedback", "-")
        except Exception as exc:
            _log_failure("a feedback request", exc)
            response = error_response(500, "INTERNAL_ERROR", "the proxy failed to handle the feedback")
        if self.feedback is not None:
            self.feedback.answered(status)
        return response

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
        supplied = supplied.strip().encode("utf-8", "surrogateescape")
        return scheme.lower() == "bearer" and hmac.compare_digest(supplied, self._token)

    def _authorize(self, request: web.Request) -> None:
        if not self._authorized(request):
            raise ValidationError(
                401,
                "UNAUTHORIZED",
                "a valid bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def record(
        self,
        endpoint: str,
        status: int,
        latency_s: float,
        rows,
        predictions,
        version,
        request_id: str,
        ignored=frozenset(),
        facts=None,
        pinned: bool = False,
    ) -> None:
        """Every scoring request ends here, answered or refused: metrics and the prediction log hook in."""
        if not self.recorders:
            return
        outcome = Outcome(
            endpoint,
            status,
            latency_s,
            rows if predictions is not None else None,
            predictions,
            version,
            request_id,
            ignored,
            facts,
            pinned,
        )
        for recorder in self.recorders:
            try:
                recorder(outcome)
            except Exception:
                _logger.exception("recorder %r failed", recorder)

    # -- operations -------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """The probe's part for anyone; with the token (or without ``--api-token``), the details too."""
        healthy, details = await self.router.health()
        live = self.router.live
        body = {
            "status": "healthy" if healthy else "degraded",
            "version": live.version if live is not None else None,
            "ready": healthy and live.invocations_url is not None,  # the live model server takes requests
        }
        if self._authorized(request):
            if self.prediction_log is not None:
                details["prediction_log"] = self.prediction_log.health()
            if self.feedback is not None:
                details["feedback"] = self.feedback.health()
            if self.capture is not None:
                details["capture"] = self.capture.health()
            body.update(details)
        return json_response(body, 200 if healthy else 503)

    async def ready(self, request: web.Request) -> web.Response:
        live = self.router.live
        if live is None or live.invocations_url is None:
            return error_response(503, "NOT_READY", "the model server is not serving yet")
        try:
            await live.check(self.session, min(self.config.timeout, 10.0))
        except UpstreamStartError as exc:
            return error_response(503, "NOT_READY", f"the model server failed its readiness check: {exc}")
        return json_response({"status": "ready", "version": live.version})

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="\n")

    async def version(self, request: web.Request) -> web.Response:
        """MLflow's own answer, byte for byte (its version as the body, labelled JSON), for MLflow's clients.

        The model's name and version are in ``/health`` and in every answer's ``X-Model-Version``.
        """
        return web.Response(body=_MLFLOW_VERSION, headers={"Content-Type": "application/json"})

    async def fallback(self, request: web.Request) -> web.Response:
        method = _ROUTES.get(request.path)
        if method is None:
            return error_response(404, "NOT_FOUND", "no such endpoint", [f"endpoints: {', '.join(self.endpoints)}"])
        response = error_response(405, "METHOD_NOT_ALLOWED", f"{request.path} takes {method}")
        response.headers["Allow"] = method
        return response

    # -- life cycle -------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )
        forwarder = BatchingForwarder if self.config.batching else DirectForwarder
        self.forwarder = forwarder(self.router, self.session, self.config)
        await self.router.start(self.session)

    async def on_cleanup(self, app: web.Application) -> None:
        """Runs after aiohttp has let in-flight requests finish: flush, stop upstreams, close."""
        await self.forwarder.close()
        await self.router.close()
        await self.session.close()


def create_app(config, router) -> web.Application:
    proxy = Proxy(config, router)
    app = web.Application(client_max_size=config.max_body_bytes)
    app[CONNECTIONS] = proxy.connections
    app.router.add_post("/invocations", proxy.invocations)
    app.router.add_post("/predict", proxy.predict)
    app.router.add_post("/feedback", proxy.feedback_labels)
    app.router.add_get("/health", proxy.health)
    app.router.add_get("/ready", proxy.ready)
    app.router.add_get("/ping", proxy.ping)
    app.router.add_get("/version", proxy.version)
    install_open_inference(app, proxy)  # /v2/...
    catch_all = app.router.add_route("*", "/{tail:.*}", proxy.fallback).resource
    app.on_startup.append(proxy.on_startup)
    app.on_cleanup.append(proxy.on_cleanup)
    install_monitoring(app, proxy, config)  # GET /metrics and the prediction log; cleans up after the proxy
    # Each route by its first path segment: the Open Inference Protocol's dozen paths are "/v2".
    proxy.endpoints = list(
        dict.fromkeys("/" + r.canonical.split("/")[1] for r in app.router.resources() if r is not catch_all)
    )
    return app


def json_response(body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers={"Content-Type": "application/json"})


def error_response(status: int, error_code: str, message: str, details=()) -> web.Response:
    return http_error_response(HttpError(status, error_code, message, details))


def http_error_response(exc: HttpError) -> web.Response:
    response = json_response(exc.body(), exc.status)
    response.headers.update(exc.headers)
    if exc.headers.get("Connection") == "close":
        response.force_close()
    return response


class _Invocations:
    """MLflow's scoring protocol (``serving.validation``): ``{"predictions": [...]}``."""

    endpoint = "/invocations"

    @staticmethod
    def upstream(request: web.Request):
        return None

    @staticmethod
    def parse(request: web.Request, body: bytes, limits, facts) -> Invocation:
        return parse_invocation(request.headers.get("Content-Type"), body, limits, facts.reader)

    @staticmethod
    def answer(request: web.Request, parsed: Invocation, scored) -> web.Response:
        return json_response(scored.predictions if parsed.unwrapped else {"predictions": scored.predictions})

    refuse = staticmethod(http_error_response)


class _Predict(_Invocations):
    """The classic single object in, one prediction out: this project's record, or ``{"prediction": ...}``
    holding what MLflow answers for the row of any other model."""

    endpoint = "/predict"

    @staticmethod
    def parse(request: web.Request, body: bytes, limits, facts) -> Invocation:
        return Invocation([predict_row(request.headers.get("Content-Type"), body, facts.reader)])

    @staticmethod
    def answer(request: web.Request, parsed: Invocation, scored) -> web.Response:
        answer = scored.predictions[0]
        return json_response(answer if scored.facts.project_outputs else {"prediction": answer})


_INVOCATIONS, _PREDICT = _Invocations(), _Predict()


def _log_failure(what: str, exc: Exception) -> None:
    """A bug of ours, with its traceback's frames but not its message, which may quote the request."""
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    _logger.error("%s failed: %s (message withheld)\n%s", what, type(exc).__name__, frames)


def _too_large(limit: int) -> ValidationError:
    return ValidationError(413, "REQUEST_TOO_LARGE", f"the body is larger than the limit of {limit} bytes")
