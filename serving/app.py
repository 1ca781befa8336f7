"""The proxy's HTTP face: validate, forward, answer; and the one place every outcome is recorded.

One proxy serves one or more registered models (``--model-uri``, repeatable), each a
``ModelService``: its router (the versions it follows, rolls out and shadows) and the
forwarder its requests share, so rows of different models never share an upstream call.
``/invocations`` and ``/predict`` are the first model's; ``/models/{name}/invocations`` and
``/models/{name}/predict`` name any of them, as ``/v2/models/{name}/...`` does; an unknown
name is a 404 that lists the served ones.

Handlers are plain methods of ``Proxy`` with no middleware on the hot path. Every answer
to ``/invocations`` and ``/predict`` carries ``X-Model-Version`` and ``X-Request-Id``
(the id a label sent to ``/feedback`` names);
every error is a short JSON body ``{"error_code", "message", "details"}``. Paths the
upstream exposes and we do not (``/docs``, ``/openapi.json``...) are simply not routes.
What the server does about connections, slow or malformed requests and ``Expect`` is in
``serving.http.server``; a body must arrive within ``--body-timeout`` of its headers, and
the answer comes within ``--timeout`` of the body. A client that goes away before its
answer is counted apart (``client_disconnects``), not as a request that failed.

``POST /webhooks/mlflow`` (with ``--webhook-secret``) takes MLflow's registry webhooks, signed
instead of behind the token: ``serving.registry.webhooks``.

``/health`` is in two parts: what a probe needs (``status``, the live ``version``,
``ready``; with several models, each model's under ``models``) for anyone, and the details
(model servers, pids, sockets, paths, errors) only with the token when ``--api-token`` is
set. ``Proxy.run`` is the part of a scoring request every protocol shares (route, check,
forward); the gRPC service (``serving.protocols.grpc.service``) calls it too.
"""

import asyncio
import collections
import functools
import hmac
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web

from iris_core.records import REQUEST_ID
from serving.errors import HttpError, log_failure
from serving.feedback.service import feedback_off
from serving.http.server import Connections, ServerLimits
from serving.observability.monitoring import install as install_monitoring
from serving.protocols.grpc.server import install as install_grpc
from serving.protocols.open_inference_routes import install as install_open_inference
from serving.protocols.scoring import Invocation, ValidationError, parse_invocation, predict_row
from serving.registry.webhooks import install as install_webhooks
from serving.upstreams.batching import BatchingForwarder
from serving.upstreams.forwarding import DirectForwarder, Scored, target_of, unavailable
from serving.upstreams.servers import UpstreamStartError

_logger = logging.getLogger(__name__)

_ROUTES = {
    "/invocations": "POST",
    "/predict": "POST",
    "/feedback": "POST",
    "/health": "GET",
    "/ready": "GET",
    "/ping": "GET",
    "/version": "GET",
    "/v2": "GET",  # the Open Inference Protocol (serving.protocols.open_inference_routes)
}
_MLFLOW_VERSION = importlib.metadata.version("mlflow").encode()
# The ``model`` label of a request naming no served model: one series for all such names, none of them shown.
UNKNOWN_MODEL = ""
CONNECTIONS = web.AppKey("connections", Connections)  # the API listener's (serving.http.server)


@dataclass(slots=True)
class ScoredRequest:
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
    ignored: frozenset = frozenset()  # what the request carried that the model does not use (serving.protocols.scoring)
    facts: object = None  # the answering version's serving.registry.model_facts.ModelFacts, when it answered
    pinned: bool = False  # the client named the version (a versioned V2 infer): never a canary statistic
    model: str = ""  # the served model's name


@dataclass(eq=False)
class ModelService:
    """One served model: the router that holds its versions, and the forwarder its requests share."""

    router: object  # a serving.rollout.router.Router
    forwarder: object = None  # set at start-up
    name: str = field(init=False)

    def __post_init__(self):
        self.name = self.router.model.name


class Proxy:
    """The handlers, the models they serve, and the recorders that observe each outcome."""

    def __init__(self, config, routers):
        self.config = config
        routers = list(routers) if isinstance(routers, list | tuple) else [routers]
        self.services: dict[str, ModelService] = {router.model.name: ModelService(router) for router in routers}
        self.default = next(iter(self.services.values()))  # what the routes without a model name answer for
        self.router = self.default.router
        self.session: aiohttp.ClientSession | None = None
        self.recorders: list[Callable[[ScoredRequest], None]] = [self._observe]  # copies for shadow and canary
        self.feedback = None  # a serving.feedback.service.FeedbackService with --feedback-log
        self.prediction_log = None  # its serving.observability.prediction_log.PredictionLogWriter with --prediction-log
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
        """One scoring request in any protocol of HTTP: ``protocol`` names the model and the version, parses,
        answers and refuses.

        It has ``endpoint`` (the metrics' label), ``service(request, proxy)`` (the model),
        ``upstream(request, service)`` (None for the live version), ``parse(request, body,
        limits, facts)`` (rows and what was ignored, checked against the contract of the
        version that is to answer), ``answer(request, parsed, scored, service)`` and
        ``refuse(http_error)``.
        """
        started = time.perf_counter()
        self.in_flight += 1
        outcome = self.outcome(protocol.endpoint, request.headers.get("X-Request-Id"))
        try:
            self._authorize(request)
            try:
                service = protocol.service(request, self)
            except HttpError:  # a name no model has: no model's version answered, no model's count
                outcome.model, outcome.version = UNKNOWN_MODEL, "none"
                raise
            upstream = protocol.upstream(request, service)
            body = await self.read_body(request)
            deadline = asyncio.get_running_loop().time() + self._timeout  # the answer comes by then
            parse = functools.partial(protocol.parse, request, body, self._limits)
            scored, parsed = await self.run(outcome, service, upstream, parse, deadline)
            status, response = 200, protocol.answer(request, parsed, scored, service)
        except HttpError as exc:
            status, response = exc.status, protocol.refuse(exc)
        except ConnectionError:  # the client went away while its body was arriving
            status, response = None, None
        except Exception as exc:
            log_failure(_logger, f"request {outcome.request_id}", exc)
            status = 500
            response = protocol.refuse(HttpError(500, "INTERNAL_ERROR", "the proxy failed to handle the request"))
        self.in_flight -= 1
        if response is None or request.transport is None:  # nobody is left to answer
            return self.client_left(protocol.endpoint, outcome.request_id)
        response.headers["X-Model-Version"] = outcome.version
        response.headers["X-Request-Id"] = outcome.request_id
        self.finish(outcome, status, started)
        return response

    def outcome(self, endpoint: str, supplied_id: str | None) -> ScoredRequest:
        """A request's outcome before anything is known of it: the client's request id when it is one, else ours."""
        request_id = supplied_id if supplied_id and REQUEST_ID.fullmatch(supplied_id) else os.urandom(8).hex()
        live = self.default.router.live
        version = live.version if live is not None else "none"
        return ScoredRequest(endpoint, 500, 0.0, None, None, version, request_id, model=self.default.name)

    async def run(self, outcome: ScoredRequest, service: ModelService, upstream, parse, deadline: float):
        """Route, check and score one request's rows, whatever its protocol; fills ``outcome`` as it goes.

        ``upstream`` is the version the client named (None: the router chooses, the canary
        taking its share); ``parse(facts)`` turns the request into rows by the contract of
        the version that is to answer. Answers ``(scored, parsed)``; raises ``HttpError``.
        """
        router = service.router
        outcome.model = service.name
        outcome.pinned = upstream is not None
        live = router.live
        outcome.version = live.version if live is not None else "none"
        if upstream is None:
            upstream = router.choose()  # the canary route for its share of requests, else None: the live one
        checked = target_of(upstream, router.live)  # whose contract the rows must fit
        if checked is None or checked.facts is None:
            raise unavailable()
        outcome.version = checked.version  # an error says which version refused it
        parsed = parse(checked.facts)
        outcome.rows, outcome.ignored = parsed.rows, parsed.ignored
        scored: Scored = await service.forwarder.predict(parsed.rows, upstream, deadline=deadline, checked=checked)
        outcome.predictions, outcome.version, outcome.facts = scored.predictions, scored.version, scored.facts
        return scored, parsed

    def service(self, name: str | None) -> ModelService:
        """The served model of that name (the first one for None); a 404 listing the served names otherwise."""
        if name is None:
            return self.default
        service = self.services.get(name)
        if service is None:
            raise HttpError(404, "MODEL_NOT_FOUND", "no such model", [f"served models: {', '.join(self.services)}"])
        return service

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
            log_failure(_logger, "a feedback request", exc)
            response = error_response(500, "INTERNAL_ERROR", "the proxy failed to handle the feedback")
        if self.feedback is not None:
            self.feedback.answered(status)
        return response

    def _authorized(self, request: web.Request) -> bool:
        return self.authorized(request.headers.get("Authorization"))

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` value (an HTTP header, or gRPC's metadata) carries the token, when one is set."""
        if self._token is None:
            return True
        scheme, _, supplied = (authorization or "").partition(" ")
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

    def finish(self, outcome: ScoredRequest, status: int, started: float) -> None:
        """Every scoring request ends here, answered or refused: metrics and the prediction log hook in."""
        outcome.status = status
        outcome.latency_s = time.perf_counter() - started
        if outcome.predictions is None:
            outcome.rows = None
        for recorder in self.recorders:
            try:
                recorder(outcome)
            except Exception:
                _logger.exception("recorder %r failed", recorder)

    def _observe(self, outcome: ScoredRequest) -> None:
        """The model's router sees its own requests' outcomes (the canary's and the shadow's copies start there)."""
        service = self.services.get(outcome.model)
        if service is not None:
            service.router.observe(outcome)

    # -- operations -------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """The probe's part for anyone; with the token (or without ``--api-token``), the details too.

        Healthy when every model is; the top level is the first model's, as with one model,
        and with several each one's is under ``models``.
        """
        reports = {name: await service.router.health() for name, service in self.services.items()}
        healthy = all(ok for ok, _ in reports.values())
        probes = {
            name: _probe(service.router, ok)
            for (name, service), (ok, _) in zip(self.services.items(), reports.values())
        }
        first = probes[self.default.name]
        body = {"status": "healthy" if healthy else "degraded", "version": first["version"], "ready": first["ready"]}
        several = len(self.services) > 1
        if several:
            body["ready"] = all(probe["ready"] for probe in probes.values())
            body["models"] = probes
        if self._authorized(request):
            body.update(reports[self.default.name][1])
            body["status"] = "healthy" if healthy else "degraded"
            if several:
                body["models"] = {name: {**probes[name], **details} for name, (_, details) in reports.items()}
            if self.prediction_log is not None:
                body["prediction_log"] = self.prediction_log.health()
            if self.feedback is not None:
                body["feedback"] = self.feedback.health()
            if self.capture is not None:
                body["capture"] = self.capture.health()
        return json_response(body, 200 if healthy else 503)

    async def ready(self, request: web.Request) -> web.Response:
        """200 once every model's live version passes its readiness check; 503 naming the first that does not."""
        versions = {}
        for name, service in self.services.items():
            live = service.router.live
            where = f"the model server of {name}" if len(self.services) > 1 else "the model server"
            if live is None or live.invocations_url is None:
                return error_response(503, "NOT_READY", f"{where} is not serving yet")
            try:
                await live.check(self.session, min(self.config.timeout, 10.0))
            except UpstreamStartError as exc:
                return error_response(503, "NOT_READY", f"{where} failed its readiness check: {exc}")
            versions[name] = live.version
        body = {"status": "ready", "version": versions[self.default.name]}
        if len(self.services) > 1:
            body["models"] = versions
        return json_response(body)

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
        for service in self.services.values():
            service.forwarder = forwarder(service.router, self.session, self.config)
            await service.router.start(self.session)

    @property
    def forwarders(self) -> list:
        return [service.forwarder for service in self.services.values() if service.forwarder is not None]

    async def on_cleanup(self, app: web.Application) -> None:
        """Runs after aiohttp has let in-flight requests finish: flush, stop upstreams, close."""
        services = list(self.services.values())
        await asyncio.gather(*(service.forwarder.close() for service in services if service.forwarder is not None))
        await asyncio.gather(*(service.router.close() for service in services))
        await self.session.close()


def create_app(config, routers) -> web.Application:
    """The app of the proxy serving the models of ``routers`` (one router per model; one router alone is one model)."""
    proxy = Proxy(config, routers)
    app = web.Application(client_max_size=config.max_body_bytes)
    app[CONNECTIONS] = proxy.connections
    app.router.add_post("/invocations", proxy.invocations)
    app.router.add_post("/predict", proxy.predict)
    app.router.add_post("/models/{name}/invocations", proxy.invocations)
    app.router.add_post("/models/{name}/predict", proxy.predict)
    app.router.add_post("/feedback", proxy.feedback_labels)
    app.router.add_get("/health", proxy.health)
    app.router.add_get("/ready", proxy.ready)
    app.router.add_get("/ping", proxy.ping)
    app.router.add_get("/version", proxy.version)
    install_open_inference(app, proxy)  # /v2/...
    install_webhooks(
        app, config, [service.router for service in proxy.services.values()]
    )  # POST /webhooks/mlflow, with a webhook secret
    catch_all = app.router.add_route("*", "/{tail:.*}", proxy.fallback).resource
    app.on_startup.append(proxy.on_startup)
    app.on_cleanup.append(proxy.on_cleanup)
    install_grpc(app, proxy, config)  # with --grpc-port: starts after the proxy, stops before it
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
    """MLflow's scoring protocol (``serving.protocols.scoring``): ``{"predictions": [...]}``."""

    endpoint = "/invocations"

    @staticmethod
    def service(request: web.Request, proxy: Proxy) -> ModelService:
        return proxy.service(request.match_info.get("name"))

    @staticmethod
    def upstream(request: web.Request, service: ModelService):
        return None

    @staticmethod
    def parse(request: web.Request, body: bytes, limits, facts) -> Invocation:
        return parse_invocation(request.headers.get("Content-Type"), body, limits, facts.reader)

    @staticmethod
    def answer(request: web.Request, parsed: Invocation, scored, service) -> web.Response:
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
    def answer(request: web.Request, parsed: Invocation, scored, service) -> web.Response:
        answer = scored.predictions[0]
        return json_response(answer if scored.facts.project_outputs else {"prediction": answer})


_INVOCATIONS, _PREDICT = _Invocations(), _Predict()


def _probe(router, healthy: bool) -> dict:
    """What a probe needs of one model: whether it is healthy, its live version, and whether that takes requests."""
    live = router.live
    return {
        "status": "healthy" if healthy else "degraded",
        "version": live.version if live is not None else None,
        "ready": healthy and live.invocations_url is not None,
    }


def _too_large(limit: int) -> ValidationError:
    return ValidationError(413, "REQUEST_TOO_LARGE", f"the body is larger than the limit of {limit} bytes")
