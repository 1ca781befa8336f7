"""The proxy's HTTP server: aiohttp's parser and handlers, with the rules a hostile client meets.

aiohttp parses the requests; this module decides what a client that breaks the rules
gets, on every listener the proxy opens (the API's and ``--metrics-port``'s):

- at most ``--max-connections`` connections at once: one more is answered 503 (the
  proxy's JSON, ``Retry-After``, ``Connection: close``) and closed, while the open ones
  keep being served;
- a request's headers must be complete ``--header-timeout`` seconds after its first byte
  (a new connection's clock starts when it opens), else 408 and the connection closes;
  the handlers give the body ``--body-timeout`` (``serving.app``); an idle keep-alive
  connection is closed after ``KEEPALIVE_S``;
- a request aiohttp cannot parse (bare LF line ends, a lying Content-Length, bad chunk
  framing, a line too long) is answered with the proxy's short JSON 400 and the
  connection closed: aiohttp's own answer echoes the request's bytes, a bearer token
  included, and its log adds them with a traceback;
- ``Expect: 100-continue`` with a Content-Length over ``--max-body-bytes`` is answered 413
  before the client sends the body; any other expectation gets 417;
- no answer names a library or its version (``Server: iris-serving``);
- the log names at most a request's method, path and id, never its headers or body.

The rules live in the connection's protocol (``GuardedRequestHandler``), so they hold for
every route, the error paths aiohttp answers by itself included.
"""

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import traceback
from dataclasses import dataclass

import orjson
from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from serving.errors import HttpError, ServingError, shorten

_logger = logging.getLogger(__name__)

SERVER_NAME = "iris-serving"
KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this (longer than common load balancers')
LINGER_S = 2.0  # after refusing a body, read and drop what still arrives for this long, then close
REFUSING_AT_ONCE = 100  # excess connections being answered 503 at a time; beyond, they are reset
_REFUSAL_LINGER_S = 2.0


@dataclass(frozen=True)
class ServerLimits:
    """What one listener allows (``ServingConfig``: ``--max-connections``, ``--header-timeout``...)."""

    max_connections: int
    header_timeout: float
    max_body_bytes: int

    @classmethod
    def of(cls, config) -> "ServerLimits":
        return cls(config.max_connections, config.header_timeout, config.max_body_bytes)


class Connections:
    """The connections of one listener: counted, capped, and each handled by ``GuardedRequestHandler``."""

    def __init__(self, limits: ServerLimits, access_log: logging.Logger | None = None):
        self.limits = limits
        self.open = 0  # read by /metrics
        self.refused = 0
        self.refusing = 0
        self._access_log = access_log

    def protocol(self, server: web.Server, loop: asyncio.AbstractEventLoop) -> asyncio.Protocol:
        """The protocol for a connection just accepted: the request handler, or a refusal over the cap."""
        if self.open >= self.limits.max_connections:
            self.refused += 1
            return _Refusal(self)
        return GuardedRequestHandler(
            server,
            loop=loop,
            connections=self,
            keepalive_timeout=KEEPALIVE_S,
            lingering_time=LINGER_S,
            access_log=self._access_log,
            access_log_class=AccessLog,
        )

    def expectation_refused(self, request: web.BaseRequest) -> web.Response | None:
        """The answer to an ``Expect`` header that must not get ``100 Continue``, else None."""
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return proxy_error(417, "EXPECTATION_FAILED", "only Expect: 100-continue is supported", close=True)
        if (request.content_length or 0) > self.limits.max_body_bytes:
            limit = self.limits.max_body_bytes
            return proxy_error(
                413, "REQUEST_TOO_LARGE", f"the body is larger than the limit of {limit} bytes", close=True
            )
        return None


class GuardedRequestHandler(RequestHandler):
    """aiohttp's request handler with the header deadline, the own error answers and the ``Server`` name."""

    def __init__(self, manager: web.Server, *, loop, connections: Connections, **kwargs):
        super().__init__(manager, loop=loop, **kwargs)
        self._connections = connections
        self._counted = False
        self._header_clock: asyncio.TimerHandle | None = None
        self._clock_count = 0  # requests whose headers were complete when the clock started
        self._last_body = None  # the last request's body stream: data for it is not a new request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connections.open += 1
        self._counted = True
        super().connection_made(transport)
        self._start_header_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._connections.open -= 1
            self._counted = False
        self._stop_header_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between_requests = (
            not self._request_in_progress
            and not self._messages
            and (self._last_body is None or self._last_body.is_eof())
        )
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:  # a request's headers are complete
            self._stop_header_clock()
        elif between_requests and data and self._header_clock is None:
            self._start_header_clock()

    def _start_header_clock(self) -> None:
        self._clock_count = self._request_count
        timeout = self._connections.limits.header_timeout
        self._header_clock = self._loop.call_later(timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_too_slow(self) -> None:
        self._header_clock = None
        if self.transport is None or self._request_count != self._clock_count or self._request_in_progress:
            return
        timeout = self._connections.limits.header_timeout
        _logger.info("closed a connection whose request headers were not complete within %g s", timeout)
        message = f"the request headers did not arrive within {timeout:g} s"
        self.transport.write(raw_error(408, "Request Timeout", "REQUEST_TIMEOUT", message))
        self.force_close()

    async def _handle_request(self, request, start_time, request_handler):
        self._last_body = request.content
        if hdrs.EXPECT in request.headers:  # answered before aiohttp would send "100 Continue"
            refusal = self._connections.expectation_refused(request)
            if refusal is not None:

                async def request_handler(_request, refusal=refusal):
                    return refusal

        return await super()._handle_request(request, start_time, request_handler)

    async def finish_response(self, request, resp, start_time):
        if not resp.prepared:
            resp.headers[hdrs.SERVER] = SERVER_NAME
        return await super().finish_response(request, resp, start_time)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None, message=None):
        """What aiohttp answers by itself (a request it cannot parse, a handler that failed): our JSON.

        Neither the answer nor the log carries anything of the request: aiohttp's message
        for a parse error quotes the bytes it choked on.
        """
        request_id = os.urandom(8).hex()
        kind = type(exc).__name__ if exc is not None else str(status)
        if status >= 500:
            frames = "".join(traceback.format_tb(exc.__traceback__)) if exc is not None else ""
            _logger.error("request %s failed: %s (message withheld)\n%s", request_id, kind, frames.rstrip())
        else:
            _logger.info("refused request %s: not valid HTTP/1.1 (%s)", request_id, kind)
        if request.writer.output_size > 0:  # part of an answer went out already: only closing is left
            raise ConnectionError("the answer was already started")
        if status >= 500:
            response = proxy_error(status, "INTERNAL_ERROR", "the proxy failed to handle the request", close=True)
        elif status in (413, 431):
            response = proxy_error(status, "REQUEST_TOO_LARGE", "the request line or headers are too large", close=True)
        else:
            response = proxy_error(status, "MALFORMED_REQUEST", "the request is not valid HTTP/1.1", close=True)
        response.headers["X-Request-Id"] = request_id
        return response


class _Refusal(asyncio.Protocol):
    """A connection over ``--max-connections``: a 503 at once, then closed without a reset."""

    def __init__(self, connections: Connections):
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._closer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._connections.refusing >= REFUSING_AT_ONCE:  # a flood: do not hold a file for each
            transport.abort()
            return
        self._connections.refusing += 1
        message = f"the proxy has {self._connections.limits.max_connections} connections open; retry shortly"
        transport.write(raw_error(503, "Service Unavailable", "TOO_MANY_CONNECTIONS", message, {"Retry-After": "1"}))
        with contextlib.suppress(OSError, NotImplementedError, RuntimeError):
            transport.write_eof()  # our side is done; reading on lets the client send without a reset
        self._closer = asyncio.get_running_loop().call_later(_REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request it sends anyway is dropped

    def eof_received(self) -> bool:
        self._transport.close()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._connections.refusing -= 1
            self._closer = None


class AccessLog(AbstractAccessLogger):
    """``--access-log``: method, path (no query string), status, time and request id; nothing else."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1f ms %s",
            request.method,
            shorten(request.rel_url.raw_path, 200),
            response.status,
            time * 1000,
            response.headers.get("X-Request-Id", "-"),
        )


class GuardedSite(web.SockSite):
    """A listening socket whose connections follow ``Connections``."""

    __slots__ = ("_connections",)

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, connections: Connections, backlog: int = 1024):
        super().__init__(runner, sock, backlog=backlog)
        self._connections = connections

    async def start(self) -> None:
        await super(web.SockSite, self).start()  # BaseSite's: SockSite's own would use aiohttp's protocol
        loop = asyncio.get_running_loop()
        server = self._runner.server
        self._server = await loop.create_server(
            lambda: self._connections.protocol(server, loop), sock=self._sock, backlog=self._backlog
        )


def serve(app: web.Application, listener: socket.socket, connections: Connections, shutdown_timeout: float) -> None:
    """Run ``app`` on ``listener`` until SIGTERM or SIGINT, then stop gracefully (as ``web.run_app`` does)."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(app, listener, connections, shutdown_timeout))
    finally:
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


async def _serve(app: web.Application, listener: socket.socket, connections: Connections, shutdown_timeout) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await GuardedSite(runner, listener, connections).start()
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()  # stop listening, let requests being answered finish, run the app's cleanup


def ensure_open_files(max_connections: int) -> None:
    """Raise the open-file limit to what ``--max-connections`` needs, or refuse it in one line.

    Past the limit, accepting fails and every new client waits; below it, the cap answers
    503 first. The margin covers the refusals in progress, the model servers' connection
    pools, the logs and the registry helper.
    """
    needed = max_connections + REFUSING_AT_ONCE + 400
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ServingError(
            f"--max-connections {max_connections} needs about {needed} open files and this process may open"
            f" {hard} (ulimit -n); lower --max-connections or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def proxy_error(status: int, error_code: str, message: str, close: bool = False) -> web.Response:
    """The proxy's short JSON error as a response; ``close`` ends the connection after it."""
    body = orjson.dumps(HttpError(status, error_code, message).body())
    response = web.Response(body=body, status=status, headers={"Content-Type": "application/json"})
    if close:
        response.force_close()
    return response


def raw_error(status: int, reason: str, error_code: str, message: str, headers: dict | None = None) -> bytes:
    """The same error as bytes on the wire, for a connection that has no request to answer."""
    body = orjson.dumps(HttpError(status, error_code, message).body())
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        f"Server: {SERVER_NAME}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
