"""``--shadow ALIAS``: keep the version another alias names running beside the live one, and judge it on live traffic.

Like a rollout, the shadowed version (the challenger, usually) gets its own `mlflow models
serve` when the alias moves, started with backoff when it fails. Once it answers, copies
of the requests the live version answered go to it in the background
(``serving.rollout.shadow.ShadowScorer``: sampled by ``--shadow-rate``, a bounded queue, its own
timeout), and every ``--shadow-report-interval`` this proxy's counts are written to the
shadowed version's tags (``iris_core.shadow_evidence``), where ``registry_tools show`` and
the gate read them. Nothing here decides what answers a client; when the shadowed version
becomes the one to roll out, the router takes its warm model server over (``take``).
"""

import asyncio
import logging
import os
import socket
import time

from iris_core.errors import RegistryUnavailable
from iris_core.resolver import Resolved
from iris_core.shadow_evidence import evidence, source_key, summary_tags
from serving.rollout.shadow import ShadowScorer
from serving.upstreams.servers import UpstreamStartError, UpstreamState

_logger = logging.getLogger(__name__)

START_BACKOFF_S = (5.0, 300.0)


def proxy_id() -> str:
    """Names this proxy's own evidence tag: unique per host and process."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Shadowing:
    """The shadowed version's model server, its scorer, and the evidence written for it."""

    def __init__(self, config, make_upstream, prepare, lookup, writer, spawn):
        self.config = config
        self.model = config.shadow_model
        self.make_upstream = make_upstream
        self.prepare = prepare  # learns the version's facts before its model server starts (Router.prepare)
        self.lookup = lookup
        self.writer = writer
        self.upstream = None  # the shadowed version's model server, once it answers
        self.scorer: ShadowScorer | None = None
        self.error: str | None = None  # why it is not shadowing, when it should be
        self.published_at: float | None = None
        self.start_backoff_s = START_BACKOFF_S
        self.id = proxy_id()
        self._spawn = spawn
        self._session = None
        self._desired: Resolved | None = None
        self._serving: set[str] = set()
        self._starting = None
        self._failures: dict[str, tuple[int, float]] = {}
        self._published: dict[str, int] = {}  # reference version -> rows in the last write
        self._reporter: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None

    def start(self, session) -> None:
        self._session = session

    # -- following the alias ----------------------------------------------------------------

    async def poll(self, serving: set[str]) -> None:
        """Ask where the shadowed alias points; ``serving`` are the versions answering clients now."""
        try:
            self._desired = await self.lookup.resolve_async(self.model)
        except RegistryUnavailable as exc:
            self.error = f"registry: {exc}"
            return
        self.reconcile(serving)

    def reconcile(self, serving: set[str]) -> None:
        """Shadow the version the alias names, unless it already answers clients (then there is nothing to compare)."""
        self._serving = serving
        target = self._desired
        if target is None or target.version in serving:
            self.error = None if target is not None else f"alias {self.config.shadow!r} is not set"
            self._end()
            return
        if self.upstream is not None and self.upstream.version == target.version:
            return
        if self._starting is not None:
            return  # one start at a time; reconcile runs again when it ends
        self._end()
        attempts, not_before = self._failures.get(target.version, (0, 0.0))
        if time.monotonic() < not_before:
            return
        self._starting = self.make_upstream(target)
        self._spawn(self._bring_up(self._starting, attempts))

    async def _bring_up(self, upstream, attempts: int) -> None:
        try:
            await self.prepare(upstream)
            await upstream.start(self._session)
        except UpstreamStartError as exc:
            first, cap = self.start_backoff_s
            wait = min(first * 2**attempts, cap)
            self._failures[upstream.version] = (attempts + 1, time.monotonic() + wait)
            self.error = f"version {upstream.version} failed to start: {exc} (retrying in {wait:g} s)"
            _logger.error("shadow: %s", self.error)
            return
        finally:
            self._starting = None
        desired = self._desired
        if desired is None or desired.version != upstream.version or upstream.version in self._serving:
            await upstream.stop(drain_timeout=0)
            self.reconcile(self._serving)
            return
        self._begin(upstream)

    def _begin(self, upstream) -> None:
        self.upstream, self.error = upstream, None
        self.scorer = ShadowScorer(
            upstream,
            self._session,
            rate=self.config.shadow_rate,
            timeout=self.config.shadow_timeout,
            max_batch_rows=self.config.max_batch_rows,
        )
        self.scorer.start()
        self._published = {}
        self._reporter = self._spawn(self._report())
        self._watcher = self._spawn(self._watch(upstream))
        _logger.info("shadowing version %s (@%s) on live traffic", upstream.version, self.config.shadow)

    async def _watch(self, upstream) -> None:
        """A shadowed model server that dies is started again on a later poll, with the start backoff."""
        code = await upstream.wait_exit()
        if upstream is not self.upstream or upstream.retired:
            return
        attempts, _ = self._failures.get(upstream.version, (0, 0.0))
        wait = min(self.start_backoff_s[0] * 2**attempts, self.start_backoff_s[1])
        self._failures[upstream.version] = (attempts + 1, time.monotonic() + wait)
        self.error = f"version {upstream.version} exited with code {code} (starting it again in {wait:g} s)"
        _logger.error("shadow: %s", self.error)
        self._watcher = None
        self._end()

    def _end(self, keep_upstream: bool = False):
        """Stop shadowing: the last counts are written, the model server stopped unless it is handed over."""
        upstream, scorer = self.upstream, self.scorer
        if upstream is None:
            return None
        self.upstream = self.scorer = None
        for task in (self._reporter, self._watcher):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._reporter = self._watcher = None
        self._spawn(self._finish(upstream, scorer, stop=not keep_upstream))
        _logger.info("no longer shadowing version %s", upstream.version)
        return upstream

    async def _finish(self, upstream, scorer: ShadowScorer, stop: bool) -> None:
        await scorer.close()
        if stop:
            await upstream.stop(drain_timeout=self.config.shadow_timeout)
        await self.publish(scorer, upstream.version)

    def take(self, version: str):
        """The shadowed model server of ``version``, handed over to the router (it is about to serve); else None."""
        upstream = self.upstream
        if upstream is None or upstream.version != version or upstream.state != UpstreamState.READY:
            return None
        return self._end(keep_upstream=True)

    def observe(self, outcome, live) -> None:
        """A client's answered request: a copy goes to the shadowed version if the live version gave it.

        A shadowed version that reads other features than the live one cannot score copies of
        its requests: nothing is copied then (``/health`` says why).
        """
        scorer = self.scorer
        if scorer is None or live is None or outcome.version != live.version:
            return
        if self.upstream.layout != live.layout:
            scorer.incompatible_requests += 1
            return
        scorer.offer(outcome.rows, outcome.predictions, outcome.version)

    # -- the evidence in the registry ---------------------------------------------------------

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.config.shadow_report_interval)
            if self.scorer is not None and self.upstream is not None:
                await self.publish(self.scorer, self.upstream.version)

    async def publish(self, scorer: ShadowScorer, version: str) -> None:
        """Write this proxy's counts (and the sums over every proxy) to the shadowed version's tags."""
        for reference, counts in list(scorer.counts.items()):
            rows = counts.rows
            if rows == self._published.get(reference):
                continue
            key, value = source_key(self.id, reference), counts.as_json()
            try:
                tags = await self.lookup.version_tags(version)
                tags[key] = value
                await self.writer.set_version_tags(version, {key: value, **summary_tags(evidence(tags, reference))})
            except RegistryUnavailable as exc:
                _logger.warning("shadow: could not write the evidence for version %s: %s", version, exc)
                return
            self._published[reference] = rows
            self.published_at = time.time()

    # -- what /health and /metrics show ------------------------------------------------------

    def describe(self, live_version: str | None) -> dict:
        upstream, scorer = self.upstream, self.scorer
        body = {
            "alias": self.config.shadow,
            "version": upstream.version if upstream else (self._desired.version if self._desired else None),
            "state": "shadowing" if upstream else ("starting" if self._starting else "idle"),
            "error": self.error,
            "published_at": self.published_at,
        }
        if scorer is not None:
            counts = scorer.counts.get(live_version) if live_version else None
            body.update(
                against=live_version,
                rows=counts.rows if counts else 0,
                calls=counts.calls if counts else 0,
                agreement=_rounded(counts.agreement) if counts else None,
                error_rate=_rounded(counts.error_rate) if counts else None,
                p99_ms=counts.p99_ms if counts else None,
                dropped_rows=scorer.dropped_rows,
            )
            if scorer.incompatible_requests:
                body["error"] = (
                    f"version {upstream.version} reads other features than the live version: nothing is copied "
                    f"({scorer.incompatible_requests} requests not copied)"
                )
        return body

    async def close(self) -> None:
        """At shutdown: write the last counts (bounded in time), then stop the model servers started here."""
        upstream, scorer = self.upstream, self.scorer
        for task in (self._reporter, self._watcher):
            if task is not None:
                task.cancel()
        if scorer is not None:
            await scorer.close()
            try:
                await asyncio.wait_for(self.publish(scorer, upstream.version), timeout=10)
            except TimeoutError:
                _logger.warning("shadow: the last counts for version %s were not written in time", upstream.version)
        running = [u for u in (upstream, self._starting) if u is not None]
        await asyncio.gather(*(u.stop(drain_timeout=0) for u in running), return_exceptions=True)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
