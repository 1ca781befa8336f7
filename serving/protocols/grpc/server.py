"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), in the proxy's own event loop.

``--grpc-port`` starts grpc's asyncio server beside the HTTP one, on the same loop and over
the same models: ``ModelInfer`` goes through ``serving.app.Proxy.run`` as a V2 infer over
REST does (the same contracts, checks, row limit, micro-batches, metrics, prediction log
and answer memory for labels), with the bearer token in the call's ``authorization``
metadata, the request id in ``x-request-id`` (one of ours when absent or unusable), and
``model-version`` and ``x-request-id`` in the trailing metadata. A message larger than
``--max-body-bytes`` is refused by grpc itself (RESOURCE_EXHAUSTED); every refusal of ours
is the ``HttpError`` the REST routes answer, with its gRPC status and a short message that
echoes nothing (``serving.protocols.grpc.translate``). The answer comes within ``--timeout`` or the
call's own deadline, whichever is sooner; a call the client cancels is counted as a client
that went away.

The service is registered by name over the messages of ``serving.protocols.grpc.messages``, so no
generated servicer code is needed. On SIGTERM the server stops taking calls and lets those
in flight finish (``--timeout``) before the models' servers stop.
"""

import asyncio
import logging
import time

import grpc
from aiohttp import web
from grpc import aio

from serving.errors import HttpError, ServingError, log_failure
from serving.protocols.grpc import messages
from serving.protocols.grpc.translate import infer_request, infer_response, message_of, model_metadata, status_of
from serving.protocols.open_inference import EXTENSIONS, SERVER_NAME
from serving.protocols.open_inference_routes import loaded, server_version

_logger = logging.getLogger(__name__)

ENDPOINT = "grpc:ModelInfer"  # the metrics' endpoint label
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
MAX_ANSWER_BYTES = 64 * 2**20  # an answer for --max-rows rows is far smaller


class InferenceService:
    """The protocol's six calls over the proxy's served models."""

    def __init__(self, proxy):
        self.proxy = proxy

    async def ServerLive(self, request, context):  # noqa: N802 (the protocol's names)
        return messages.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        services = self.proxy.services.values()
        ready = all([await self._up(service.router.live) for service in services])
        return messages.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request, context):  # noqa: N802
        service, upstream = await self._named(request.name, request.version, context)
        return messages.ModelReadyResponse(ready=await self._up(upstream))

    async def ServerMetadata(self, request, context):  # noqa: N802
        return messages.ServerMetadataResponse(name=SERVER_NAME, version=server_version(), extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):  # noqa: N802
        service, upstream = await self._named(request.name, request.version, context)
        if upstream is None or upstream.facts is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model server is not serving yet")
        return model_metadata(service.name, service.router.loaded_versions(), upstream.facts.signature)

    async def ModelInfer(self, request, context):  # noqa: N802
        proxy = self.proxy
        started = time.perf_counter()
        metadata = dict(context.invocation_metadata() or ())
        outcome = proxy.outcome(ENDPOINT, metadata.get("x-request-id"))
        proxy.in_flight += 1
        failure = None
        try:
            if not proxy.authorized(metadata.get("authorization")):
                raise HttpError(401, "UNAUTHORIZED", "a valid bearer token is required (authorization: Bearer <token>)")
            service = proxy.service(request.model_name)
            upstream = loaded(service.router, request.model_version) if request.model_version else None
            remaining = context.time_remaining()
            seconds = proxy.config.timeout if remaining is None else min(proxy.config.timeout, remaining)
            deadline = asyncio.get_running_loop().time() + seconds

            def parse(facts):
                return infer_request(request, proxy.config.limits, facts.reader, facts.signature.output_names)

            scored, parsed = await proxy.run(outcome, service, upstream, parse, deadline)
            response = infer_response(service.name, scored.version, parsed, scored.predictions, scored.facts.signature)
            status = 200
        except HttpError as exc:
            status, failure = exc.status, exc
        except asyncio.CancelledError:  # the client cancelled the call, or its deadline passed
            proxy.in_flight -= 1
            proxy.client_left(ENDPOINT, outcome.request_id)
            raise
        except Exception as exc:
            log_failure(_logger, f"gRPC request {outcome.request_id}", exc)
            status, failure = 500, HttpError(500, "INTERNAL_ERROR", "the proxy failed to handle the request")
        proxy.in_flight -= 1
        proxy.finish(outcome, status, started)
        context.set_trailing_metadata((("model-version", outcome.version), ("x-request-id", outcome.request_id)))
        if failure is not None:
            await context.abort(status_of(failure), message_of(failure))
        return response

    async def _named(self, name: str, version: str, context):
        """The model and the upstream a call names: its live version's, or a loaded version's; else NOT_FOUND."""
        try:
            service = self.proxy.service(name)
            return service, service.router.live if not version else loaded(service.router, version)
        except HttpError as exc:
            await context.abort(status_of(exc), message_of(exc))

    async def _up(self, upstream) -> bool:
        return upstream is not None and await upstream.is_up(self.proxy.session)


def handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The protocol's service by name, each call's messages read and written by the classes built from its descriptor."""
    methods = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(service, name),
            request_deserializer=getattr(messages, f"{name}Request").FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )
        for name in METHODS
    }
    return grpc.method_handlers_generic_handler(messages.SERVICE, methods)


GRPC_SERVER = web.AppKey("grpc_server", object)


def install(app: web.Application, proxy, config) -> None:
    """Start the gRPC server once the proxy has started, and stop it, calls drained, before the proxy stops."""
    if config.grpc_port is None:
        return

    async def start(app: web.Application) -> None:
        server = aio.server(
            maximum_concurrent_rpcs=config.max_connections,
            options=[
                ("grpc.max_receive_message_length", config.max_body_bytes),
                ("grpc.max_send_message_length", MAX_ANSWER_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers((handler(InferenceService(proxy)),))
        address = f"{config.host}:{config.grpc_port}"
        try:
            server.add_insecure_port(address)
        except RuntimeError:
            raise ServingError(f"cannot listen for gRPC on {address}") from None
        await server.start()
        app[GRPC_SERVER] = server
        _logger.info("the Open Inference Protocol over gRPC on %s", address)

    async def stop(app: web.Application) -> None:
        server = app.get(GRPC_SERVER)
        if server is not None:
            await server.stop(grace=config.timeout)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
