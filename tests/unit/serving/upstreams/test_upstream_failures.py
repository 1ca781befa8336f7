"""Every way a model server can fail, mapped to one status: in process, against loopback servers that misbehave on cue.

``post_rows`` is the one call the forwarders make; each fake below is a real socket
server doing one wrong thing. Refused, reset or cut off: 503 with ``Retry-After`` (the
model server is gone or restarting). Silent: 504 within the time given. An answer that is
not a scoring answer: 502. None of them leaves the proxy's log holding what it answered.
"""

import asyncio
import logging
import socket
import time

import aiohttp
import pytest

from serving.upstreams.forwarding import UpstreamError, post_rows
from tests.helpers.iris import FEATURES
from tests.helpers.support import free_port

ROWS = [[5.1, 3.5, 1.4, 0.2]]
SECRET_ANSWER = b"secret-model-server-output"


async def misbehaving(conduct) -> tuple[asyncio.AbstractServer, str]:
    """A loopback server whose every connection is handled by ``conduct(reader, writer)``."""

    async def handle(reader, writer):
        try:
            await conduct(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/invocations"


async def read_request(reader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)


def answer(status_line: bytes, body: bytes, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return status_line + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length + body


async def reset(reader, writer):
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST


async def close_without_answer(reader, writer):
    await read_request(reader)


async def cut_off_mid_answer(reader, writer):
    await read_request(reader)
    writer.write(answer(b"HTTP/1.1 200 OK", b'{"predictions": [', length=500))
    await writer.drain()


async def silent(reader, writer):
    await read_request(reader)
    await asyncio.sleep(60)


async def not_http(reader, writer):
    await read_request(reader)
    writer.write(b"\x00\x01 " + SECRET_ANSWER + b"\r\n\r\n")
    await writer.drain()


async def error_status(reader, writer):
    await read_request(reader)
    writer.write(answer(b"HTTP/1.1 500 Internal Server Error", b'{"stack_trace": "' + SECRET_ANSWER + b'"}'))
    await writer.drain()


async def not_predictions(reader, writer):
    await read_request(reader)
    writer.write(answer(b"HTTP/1.1 200 OK", b'{"' + SECRET_ANSWER + b'": 1}'))
    await writer.drain()


async def wrong_number_of_rows(reader, writer):
    await read_request(reader)
    writer.write(answer(b"HTTP/1.1 200 OK", b'{"predictions": [{"prediction": "setosa"}]}'))  # two were sent
    await writer.drain()


async def busy(reader, writer):
    await read_request(reader)
    writer.write(answer(b"HTTP/1.1 503 Service Unavailable", b"{}"))
    await writer.drain()


def outcome(conduct, timeout: float = 5.0) -> tuple[UpstreamError, float]:
    """The error ``post_rows`` raises against a server that behaves so, and how long it took."""

    async def body():
        server, url = await misbehaving(conduct)
        try:
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                with pytest.raises(UpstreamError) as caught:
                    await post_rows(session, url, FEATURES, ROWS, timeout)
                return caught.value, time.monotonic() - started
        finally:
            server.close()

    return asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.parametrize(
    "conduct",
    [reset, close_without_answer, cut_off_mid_answer, busy],
    ids=["reset", "closed-without-answer", "cut-off-mid-answer", "answers-503"],
)
def test_a_model_server_that_resets_closes_or_is_busy_gives_503_with_retry_after(conduct):
    error, _ = outcome(conduct)
    assert (error.status, error.error_code) == (503, "UPSTREAM_UNAVAILABLE")
    assert int(error.headers["Retry-After"]) > 0


def test_a_model_server_that_refuses_connections_gives_503_with_retry_after():
    async def body():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(UpstreamError) as caught:
                await post_rows(session, f"http://127.0.0.1:{free_port()}/invocations", FEATURES, ROWS, 5)
            return caught.value

    error = asyncio.run(body())
    assert (error.status, "Retry-After" in error.headers) == (503, True)


def test_a_silent_model_server_gives_504_within_the_time_given():
    error, took = outcome(silent, timeout=0.5)
    assert (error.status, error.error_code) == (504, "UPSTREAM_TIMEOUT")
    assert 0.5 <= took < 1.0


@pytest.mark.parametrize(
    "conduct",
    [not_http, error_status, not_predictions, wrong_number_of_rows],
    ids=["not-http", "answers-500", "not-predictions", "wrong-number-of-rows"],
)
def test_an_answer_that_is_not_a_scoring_answer_gives_502_and_is_not_logged(conduct, caplog):
    with caplog.at_level(logging.DEBUG, logger="serving"):
        error, _ = outcome(conduct)
    assert (error.status, error.error_code) == (502, "UPSTREAM_ERROR")
    assert "Retry-After" not in error.headers
    assert SECRET_ANSWER.decode() not in caplog.text + error.message
