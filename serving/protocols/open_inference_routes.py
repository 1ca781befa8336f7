"""The Open Inference Protocol's endpoints on the proxy: thin handlers over ``serving.protocols.open_inference``.

``POST /v2/models/{name}[/versions/{v}]/infer`` is a scoring request like
``/invocations``: the same token, body limit, forwarder (so it joins the same
micro-batches), metrics, prediction log, ``X-Model-Version`` and ``X-Request-Id``
(``Proxy.score``). A versioned infer goes to that version's model server when it is
live or kept warm, and is a 404 naming the loaded versions otherwise. Health and
metadata endpoints are open, like ``/health``. Every error is the protocol's
``{"error": "..."}``.
"""

import importlib.metadata

import orjson
from aiohttp import web

from serving.errors import HttpError
from serving.protocols.open_inference import (
    BINARY_TYPE,
    INFERENCE_HEADER,
    error_body,
    infer_response,
    model_metadata,
    parse_infer_request,
    server_metadata,
)

INFER_ENDPOINT = "/v2/models/infer"  # the metrics' endpoint label for both infer routes


def install(app: web.Application, proxy) -> None:
    """Add the routes (before the catch-all route)."""
    routes = OpenInference(proxy)
    app.router.add_get("/v2", routes.server)
    app.router.add_get("/v2/health/live", routes.live)
    app.router.add_get("/v2/health/ready", routes.server_ready)
    app.router.add_get("/v2/models/{name}", routes.metadata)
    app.router.add_get("/v2/models/{name}/versions/{version}", routes.metadata)
    app.router.add_get("/v2/models/{name}/ready", routes.model_ready)
    app.router.add_get("/v2/models/{name}/versions/{version}/ready", routes.model_ready)
    app.router.add_post("/v2/models/{name}/infer", routes.infer)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", routes.infer)
    app.router.add_route("*", "/v2/{tail:.*}", routes.fallback)


class OpenInference:
    """The handlers, and the protocol ``Proxy.score`` speaks for an infer request."""

    endpoint = INFER_ENDPOINT

    def __init__(self, proxy):
        self.proxy = proxy

    # -- scoring: the steps Proxy.score calls ------------------------------------------------

    async def infer(self, request: web.Request) -> web.Response:
        return await self.proxy.score(request, self)

    def service(self, request: web.Request, proxy):
        return proxy.service(request.match_info["name"])

    def upstream(self, request: web.Request, service):
        """The upstream that must answer: None (the live one) unless a version is named."""
        version = request.match_info.get("version")
        return None if version is None else loaded(service.router, version)

    def parse(self, request: web.Request, body: bytes, limits, facts):
        header_length = request.headers.get(INFERENCE_HEADER)
        return parse_infer_request(body, header_length, limits, facts.reader, facts.signature.output_names)

    def answer(self, request: web.Request, parsed, scored, service) -> web.Response:
        body, header_length = infer_response(
            service.name, scored.version, parsed, scored.predictions, scored.facts.signature
        )
        if header_length is None:
            return web.Response(body=body, headers={"Content-Type": "application/json"})
        return web.Response(body=body, headers={"Content-Type": BINARY_TYPE, INFERENCE_HEADER: str(header_length)})

    def refuse(self, exc: HttpError) -> web.Response:
        return _error(exc)

    # -- health and metadata -----------------------------------------------------------------

    async def server(self, request: web.Request) -> web.Response:
        return _json(server_metadata(server_version()))

    async def live(self, request: web.Request) -> web.Response:
        return _json({"live": True})

    async def server_ready(self, request: web.Request) -> web.Response:
        """Ready when every served model's live version is."""
        ready = all([await self._up(service.router.live) for service in self.proxy.services.values()])
        return _json({"ready": ready}, 200 if ready else 503)

    async def metadata(self, request: web.Request) -> web.Response:
        try:
            service, upstream = self._named(request)
            if upstream is None or upstream.facts is None:
                raise HttpError(503, "UPSTREAM_UNAVAILABLE", "the model server is not serving yet")
        except HttpError as exc:
            return _error(exc)
        return _json(model_metadata(service.name, service.router.loaded_versions(), upstream.facts.signature))

    async def model_ready(self, request: web.Request) -> web.Response:
        try:
            service, upstream = self._named(request)
        except HttpError as exc:
            return _error(exc)
        ready = await self._up(upstream)
        return _json({"name": service.name, "ready": ready}, 200 if ready else 503)

    async def fallback(self, request: web.Request) -> web.Response:
        return _error(HttpError(404, "NOT_FOUND", f"no such endpoint of the Open Inference Protocol: {request.method}"))

    # -- the pieces ---------------------------------------------------------------------------

    def _named(self, request: web.Request):
        """The model the path names and its upstream: the live one, or a loaded version's (else a 404)."""
        service = self.proxy.service(request.match_info["name"])
        version = request.match_info.get("version")
        return service, service.router.live if version is None else loaded(service.router, version)

    async def _up(self, upstream) -> bool:
        return upstream is not None and await upstream.is_up(self.proxy.session)


def loaded(router, version: str):
    """The upstream serving ``version`` of the router's model now: live, delivered or warm (else a 404)."""
    upstream = router.upstream_for(version)
    if upstream is None:
        versions = ", ".join(router.loaded_versions()) or "none"
        raise HttpError(
            404, "VERSION_NOT_LOADED", f"version {version[:20]!r} is not loaded; loaded versions: {versions}"
        )
    return upstream


def server_version() -> str:
    """The project's version when it is installed as a package; the container image copies the code instead."""
    try:
        return importlib.metadata.version("iris-mlops")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _json(body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers={"Content-Type": "application/json"})


def _error(exc: HttpError) -> web.Response:
    response = web.Response(body=error_body(exc), status=exc.status, headers={"Content-Type": "application/json"})
    response.headers.update(exc.headers)
    return response
