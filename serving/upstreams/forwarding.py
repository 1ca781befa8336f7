"""Send validated rows to the live upstream and map every way that can fail to one HTTP answer.

This is the seam the forwarders share: ``call_upstream`` asks an upstream
(``serving.upstreams.servers.Upstream.score``) to score rows, and ``post_rows`` is the one POST of
rows to an ``/invocations`` URL that it makes. ``DirectForwarder`` makes one such call per
request, and the batching forwarder (``serving.upstreams.batching``) coalesces concurrent requests
into one call. Both take ``(router, session, config)`` and answer ``await predict(rows,
upstream=None, deadline=None)`` with a ``Scored``: the rows go to ``upstream`` when one is
given (a versioned request), to where a ``Route`` points when the call goes out (a
canary's share, which falls back to the live upstream once its delivery ends), else to
``router.live`` read at call time, so a rollout switch applies to the next call.

Each request carries a deadline (event-loop time, ``--timeout`` after its body arrived):
its answer comes by then whatever the upstream does. Failures map as the README says:
refused, reset or disconnected -> 503 with ``Retry-After`` (a model server restarting or
gone); no answer in time -> 504; an answer that is not a scoring answer -> 502.
"""

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
import orjson

from iris_core.redaction import redact
from serving.errors import HttpError

_logger = logging.getLogger(__name__)

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


def timed_out() -> UpstreamError:
    return UpstreamError(504, "UPSTREAM_TIMEOUT", "the model server did not answer in time")


def bad_answer(message: str = "the model server failed to answer") -> UpstreamError:
    return UpstreamError(502, "UPSTREAM_ERROR", message)


class Route:
    """A target that names its upstream only when the call goes out (``current``), not when it was chosen."""

    def current(self):
        raise NotImplementedError


def target_of(upstream, live, checked=None):
    """Where a request goes now: its own upstream, where its route points now, or the live upstream (None).

    ``checked`` is the upstream whose version's contract the request's rows were checked
    against. When the target now reads other features (the alias moved between the check
    and the call, to a version of another feature set), the rows go to ``checked`` instead:
    a request is scored by a version whose contract it fits, or, that version gone, fails
    with 503 and is sent again.
    """
    target = live if upstream is None else (upstream.current() if isinstance(upstream, Route) else upstream)
    if checked is not None and target is not checked and (target is None or target.layout != checked.layout):
        return checked
    return target


@dataclass(frozen=True)
class Scored:
    """The model's answer for one request's rows, the model version that gave it, and what is known of that version."""

    predictions: list
    version: str
    facts: object = None  # the version's serving.registry.model_facts.ModelFacts


async def call_upstream(
    session: aiohttp.ClientSession, upstream, rows: list[list[float]], deadline: float, counted: bool = True
) -> list[dict]:
    """The upstream's answers for the rows (in its contract's order), in row order, by ``deadline``.

    503 when there is no upstream, 504 when the deadline (event-loop time) has passed.
    ``counted=False``: the rows are of requests that named their version, kept out of the
    upstream's statistics (``Upstream.stats``, what a canary is judged on).
    """
    if upstream is None:
        raise unavailable()
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise timed_out()
    if not counted:
        return await upstream.score(session, rows, remaining, counted=False)
    return await upstream.score(session, rows, remaining)


def counts_in_statistics(upstream) -> bool:
    """Whether a request's call counts in its upstream's statistics: not when the request named the version itself.

    ``upstream`` is what the request was sent with: None (the live one) or a ``Route`` (a
    canary's share) were chosen by the router; an upstream itself was named by the client.
    """
    return upstream is None or isinstance(upstream, Route)


async def post_rows(
    session: aiohttp.ClientSession,
    url: str,
    names: tuple[str, ...],
    rows: list[list],
    timeout: float,
    max_bytes: int | None = None,
) -> list:
    """One scoring call of rows of the features ``names``, answered within ``timeout`` seconds or failed with the
    status that says why.

    With ``max_bytes``, an answer longer than that is read no further and fails the call (502).
    """
    # BLAS scores one row with another kernel than several, which changes the last bit of the
    # probabilities: a lone row travels with a copy of itself, so no answer depends on batching.
    sent = rows * 2 if len(rows) == 1 else rows
    payload = upstream_body(names, sent)
    try:
        status, body = await _post(session, url, payload, asyncio.get_running_loop().time() + timeout, max_bytes)
    except AnswerTooLarge:
        _logger.debug("upstream %s answered more than %d bytes for %d rows", redact(url), max_bytes, len(rows))
        raise bad_answer(f"the model server's answer is longer than {max_bytes} bytes") from None
    except TimeoutError:  # aiohttp's connect and read time-outs are TimeoutErrors too
        raise timed_out() from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
        # Refused, reset, or closed before the whole answer came: the model server went away.
        _logger.warning("upstream %s unreachable: %s", redact(url), type(exc).__name__)
        raise unavailable() from None
    except aiohttp.ClientError as exc:  # it answered, but not in HTTP we can read (ClientResponseError)
        _logger.warning("upstream %s failed: %s", redact(url), type(exc).__name__)
        raise bad_answer() from None
    if status != 200:
        _logger.warning("upstream %s answered %s", redact(url), status)
        if status == 503:
            raise unavailable()
        if status in (408, 504):
            raise UpstreamError(504, "UPSTREAM_TIMEOUT", "the model server timed out")
        raise bad_answer("the model server failed to score the rows")
    try:
        predictions = orjson.loads(body)["predictions"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        predictions = None
    if not isinstance(predictions, list) or len(predictions) != len(sent):
        _logger.warning("upstream %s answered 200 with an unusable body (%d bytes)", redact(url), len(body))
        raise bad_answer("the model server gave an unusable answer")
    return predictions[: len(rows)]


def upstream_body(names: tuple[str, ...], rows: list[list]) -> bytes:
    """The rows as MLflow's columnar ``inputs``: a list per feature.

    `mlflow models serve` builds the same float64 frame from it as from
    ``dataframe_split`` (the answers are identical to the bit), but spends ~10% less CPU
    per call reading it (4.0 against 4.4 ms for 32 rows on this project's 2-core machine),
    and the model server's CPU is what bounds throughput under load.
    """
    return orjson.dumps({"inputs": dict(zip(names, map(list, zip(*rows))))})


class AnswerTooLarge(Exception):
    """The model server's answer ran past the bytes the caller allows."""


async def _post(session, url: str, payload: bytes, deadline: float, max_bytes: int | None) -> tuple[int, bytes]:
    """POST once more when a kept-alive connection turns out closed (scoring is idempotent), by ``deadline``."""
    loop = asyncio.get_running_loop()
    try:
        return await _post_once(session, url, payload, deadline - loop.time(), max_bytes)
    except aiohttp.ServerDisconnectedError:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError from None
        return await _post_once(session, url, payload, remaining, max_bytes)


async def _post_once(session, url: str, payload: bytes, timeout: float, max_bytes: int | None) -> tuple[int, bytes]:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with session.post(url, data=payload, headers=_JSON_HEADERS, timeout=client_timeout) as response:
        if max_bytes is None:
            return response.status, await response.read()
        if (response.content_length or 0) > max_bytes:
            raise AnswerTooLarge  # leaving unread closes the connection: nothing more of it is received
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > max_bytes:
                raise AnswerTooLarge
        return response.status, bytes(body)


class DirectForwarder:
    """One upstream call per request: the simplest forwarder, used with ``--no-batching``."""

    def __init__(self, router, session: aiohttp.ClientSession, config):
        self._router = router
        self._session = session
        self._timeout = float(config.timeout)
        self.batches_sent = 0  # upstream calls, and the requests they carried (read by /metrics)
        self.requests_sent = 0

    async def predict(self, rows: list[list], upstream=None, deadline: float | None = None, checked=None) -> Scored:
        """Score the rows by ``deadline`` (event-loop time; ``--timeout`` from now when not given).

        ``checked``: the upstream whose contract the rows were checked against (``target_of``).
        """
        counted = counts_in_statistics(upstream)
        upstream = target_of(upstream, self._router.live, checked)
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._timeout
        self.batches_sent += 1
        self.requests_sent += 1
        try:
            async with asyncio.timeout_at(deadline):  # exact: aiohttp rounds long time-outs up to a second
                predictions = await call_upstream(self._session, upstream, rows, deadline, counted)
        except TimeoutError:
            raise timed_out() from None
        return Scored(predictions, upstream.version, upstream.facts)

    async def close(self) -> None:
        """Nothing is queued here; the batching forwarder flushes its queue on close."""
