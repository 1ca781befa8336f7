"""Send validated rows to the live upstream and map every way that can fail to one HTTP answer.

This is the seam the forwarders share: ``call_upstream`` asks an upstream
(``serving.upstream.Upstream.score``) to score rows, and ``post_rows`` is the one POST of
rows to an ``/invocations`` URL that it makes. ``DirectForwarder`` makes one such call per
request, and the batching forwarder (``serving.batching``) coalesces concurrent requests
into one call. Both take ``(router, session, config)`` and answer ``await predict(rows,
upstream=None)`` with a ``Scored``: the rows go to ``upstream`` when one is given (a
versioned request, a canary's share), else to ``router.live`` read at call time, so a
rollout switch applies to the next call.
"""

import functools
import logging
from dataclasses import dataclass

import aiohttp
import orjson

from iris_core.schema import FEATURES
from serving.errors import HttpError

_logger = logging.getLogger(__name__)

_COLUMNS = list(FEATURES)
_JSON_HEADERS = {"Content-Type": "application/json"}
RETRY_AFTER_S = 2


class UpstreamError(HttpError):
    """The upstream could not score the rows: status and error code for the client, a generic message.

    A 503 carries ``Retry-After``: the model server is starting, restarting or refusing.
    """

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(
            status, error_code, message, headers={"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        )


def unavailable(message: str = "the model server is not available; retry shortly") -> UpstreamError:
    return UpstreamError(503, "UPSTREAM_UNAVAILABLE", message)


@dataclass(frozen=True)
class Scored:
    """The model's answer for one request's rows, and the model version that gave it."""

    predictions: list[dict]
    version: str


async def call_upstream(
    session: aiohttp.ClientSession, upstream, rows: list[list[float]], timeout: float
) -> list[dict]:
    """The upstream's prediction records for the rows (in FEATURES order), in row order; 503 when there is none."""
    if upstream is None:
        raise unavailable()
    return await upstream.score(session, rows, timeout)


async def post_rows(session: aiohttp.ClientSession, url: str, rows: list[list[float]], timeout: float) -> list[dict]:
    # BLAS scores one row with another kernel than several, which changes the last bit of the
    # probabilities: a lone row travels with a copy of itself, so no answer depends on batching.
    sent = rows * 2 if len(rows) == 1 else rows
    payload = orjson.dumps({"dataframe_split": {"columns": _COLUMNS, "data": sent}})
    try:
        status, body = await _post(session, url, payload, _client_timeout(timeout))
    except TimeoutError:
        raise UpstreamError(504, "UPSTREAM_TIMEOUT", f"the model server did not answer within {timeout:g} s") from None
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
        _logger.warning("upstream %s unreachable: %s", url, type(exc).__name__)
        raise unavailable() from None
    except aiohttp.ClientError as exc:
        _logger.warning("upstream %s failed: %s", url, type(exc).__name__)
        raise UpstreamError(502, "UPSTREAM_ERROR", "the model server failed to answer") from None
    if status != 200:
        _logger.warning("upstream %s answered %s: %.300r", url, status, body)
        if status == 503:
            raise unavailable()
        if status in (408, 504):
            raise UpstreamError(504, "UPSTREAM_TIMEOUT", "the model server timed out")
        raise UpstreamError(502, "UPSTREAM_ERROR", "the model server failed to score the rows")
    try:
        predictions = orjson.loads(body)["predictions"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        predictions = None
    if not isinstance(predictions, list) or len(predictions) != len(sent):
        _logger.warning("upstream %s answered 200 with an unusable body: %.300r", url, body)
        raise UpstreamError(502, "UPSTREAM_ERROR", "the model server gave an unusable answer")
    return predictions[: len(rows)]


async def _post(session, url: str, payload: bytes, timeout: aiohttp.ClientTimeout) -> tuple[int, bytes]:
    """POST once more when a kept-alive connection turns out closed: scoring is idempotent."""
    try:
        async with session.post(url, data=payload, headers=_JSON_HEADERS, timeout=timeout) as response:
            return response.status, await response.read()
    except aiohttp.ServerDisconnectedError:
        async with session.post(url, data=payload, headers=_JSON_HEADERS, timeout=timeout) as response:
            return response.status, await response.read()


@functools.lru_cache(maxsize=16)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


class DirectForwarder:
    """One upstream call per request: the simplest forwarder, used with ``--no-batching``."""

    def __init__(self, router, session: aiohttp.ClientSession, config):
        self._router = router
        self._session = session
        self._timeout = float(config.timeout)
        self.batches_sent = 0  # upstream calls, and the requests they carried (read by /metrics)
        self.requests_sent = 0

    async def predict(self, rows: list[list[float]], upstream=None) -> Scored:
        if upstream is None:
            upstream = self._router.live
        self.batches_sent += 1
        self.requests_sent += 1
        predictions = await call_upstream(self._session, upstream, rows, self._timeout)
        return Scored(predictions, upstream.version)

    async def close(self) -> None:
        """Nothing is queued here; the batching forwarder flushes its queue on close."""
