"""Which upstream answers: the live one, switched atomically when the alias moves (blue/green).

The router owns the managed upstreams. It keeps the live one running (restarting it with
backoff when it dies), follows the alias by polling the registry, brings a new version up
beside the live one and switches only once it answers the canary, and keeps the previous
ones warm (``--keep-warm``) so a rollback is a pointer swap, not a 6 s start. Whatever
fails, the live upstream keeps serving; ``/health`` says what went wrong.
"""

import asyncio
import logging
import time

import aiohttp

from serving.registry import RegistryLookup, RegistryUnavailable, Resolved
from serving.upstream import ExternalUpstream, ManagedUpstream, Upstream, UpstreamStartError

_logger = logging.getLogger(__name__)

RESTART_BACKOFF_MAX_S = 30.0
ROLLOUT_BACKOFF_S = (5.0, 300.0)


class Router:
    """Holds ``live`` (read on every request), the warm upstreams, and the rollout state."""

    def __init__(self, config, initial: Resolved | None, lookup: RegistryLookup | None = None):
        self.config = config
        self.model = config.model
        self.lookup = lookup
        self.live: Upstream | None = None
        self.warm: list[ManagedUpstream] = []
        self.rollout: dict | None = None
        self.registry: dict = {"state": "ok" if initial else "not_used", "checked_at": time.time()}
        self.started_at = time.monotonic()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._desired = initial
        self._starting: ManagedUpstream | None = None
        self._failures: dict[str, tuple[int, float]] = {}
        self.events = {"restart": 0, "rollout_done": 0, "rollout_failed": 0}  # read by /metrics (serving.metrics)
        if config.upstream:
            version = initial.version if initial else (self.model.version or "unknown")
            self.live = ExternalUpstream(config.upstream, version, initial.run_id if initial else None)
        else:
            self.live = self._managed(initial)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the live upstream and the alias watcher in the background; returns at once."""
        self._session = session
        if isinstance(self.live, ManagedUpstream):
            self._spawn(self._keep_running(self.live, started=False))
        if self.config.follows_alias and self.lookup is not None:
            self._spawn(self._follow())

    async def close(self) -> None:
        """Stop watching and stop every upstream we started; requests have drained by now."""
        # Listed before cancelling: a cancelled start forgets its upstream, which must still stop.
        managed = [u for u in [self.live, self._starting, *self.warm] if isinstance(u, ManagedUpstream)]
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(u.stop(drain_timeout=self.config.timeout) for u in managed), return_exceptions=True)
        if self.lookup is not None:
            self.lookup.close()

    # -- what /health and /version show -----------------------------------------------------

    async def health(self) -> tuple[bool, dict]:
        live = self.live
        healthy = live is not None and await live.is_up(self._session)
        body = {
            "status": "healthy" if healthy else "degraded",
            "model": {"name": self.model.name, "alias": self.model.alias, "version": live.version if live else None,
                      "run_id": live.run_id if live else None},
            "upstream": live.describe() if live else None,
            "warm": [{"version": u.version, "state": u.state, "pid": u.describe()["pid"]} for u in self.warm],
            "following": self.config.follows_alias,
            "rollout": self.rollout,
            "registry": self.registry,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }
        return healthy, body

    # -- keeping the live upstream up ---------------------------------------------------------

    def _managed(self, target: Resolved) -> ManagedUpstream:
        return ManagedUpstream(self.model.version_uri(target.version), target.version, target.run_id, self.config)

    async def _keep_running(self, upstream: ManagedUpstream, started: bool) -> None:
        """Run it until it is retired; when it dies while live, start it again with backoff."""
        delay = 1.0
        while not upstream.retired:
            if not started:
                try:
                    await upstream.start(self._session)
                except UpstreamStartError as exc:
                    _logger.error("model server for version %s failed to start: %s", upstream.version, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RESTART_BACKOFF_MAX_S)
                    continue
                delay = 1.0
            started = False
            code = await upstream.wait_exit()
            if upstream.retired:
                return
            _logger.error("model server for version %s exited with code %s", upstream.version, code)
            if upstream is not self.live:
                self._forget(upstream)
                return
            self.events["restart"] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF_MAX_S)

    def _forget(self, upstream: ManagedUpstream) -> None:
        if upstream in self.warm:
            self.warm.remove(upstream)
        self._spawn(upstream.stop(drain_timeout=0))

    # -- following the alias ----------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            await self.poll()

    async def poll(self) -> None:
        """Ask the registry where the alias points and act on the answer."""
        try:
            target = await self.lookup.resolve_async()
        except RegistryUnavailable as exc:  # keep serving what we serve
            self._registry_state("unreachable", str(exc))
            return
        if target is None:
            self._registry_state("alias_missing", f"alias {self.model.alias!r} is not set; serving the last version")
            return
        self._registry_state("ok", None)
        if self._desired is None or target.version != self._desired.version:
            _logger.info("alias %s now points to version %s", self.model.alias, target.version)
            self._failures.clear()
        self._desired = target
        self.reconcile()

    def _registry_state(self, state: str, message: str | None) -> None:
        if state != self.registry.get("state"):
            log = _logger.info if state == "ok" else _logger.warning
            log("registry: %s%s", state, f" ({message})" if message else "")
        self.registry = {"state": state, "message": message, "checked_at": time.time()}

    def reconcile(self) -> None:
        """Move traffic towards the desired version: a warm one at once, else start one beside the live."""
        target = self._desired
        if target is None or (self.live is not None and target.version == self.live.version):
            if self.rollout and self.rollout["state"] == "failed":
                self.rollout = {**self.rollout, "state": "abandoned"}
            return
        warm = next((u for u in self.warm if u.version == target.version and u.state == "ready"), None)
        if warm is not None:
            self._switch(warm, cold=False)
            return
        if self._starting is not None:
            return  # one start at a time; reconcile runs again when it ends
        attempts, not_before = self._failures.get(target.version, (0, 0.0))
        if time.monotonic() < not_before:
            return
        self._starting = self._managed(target)
        self.rollout = {"version": target.version, "from_version": self.live.version if self.live else None,
                        "state": "starting", "attempt": attempts + 1, "started_at": time.time()}
        self._spawn(self._bring_up(self._starting, attempts, self.rollout))

    async def _bring_up(self, upstream: ManagedUpstream, attempts: int, record: dict) -> None:
        try:
            await upstream.start(self._session)
        except UpstreamStartError as exc:
            wait = min(ROLLOUT_BACKOFF_S[0] * 2**attempts, ROLLOUT_BACKOFF_S[1])
            self._failures[upstream.version] = (attempts + 1, time.monotonic() + wait)
            self._update_rollout(record, state="failed", error=str(exc), retry_in_s=wait)
            self.events["rollout_failed"] += 1
            _logger.error("rollout to version %s failed, still serving version %s: %s (retrying in %g s)",
                          upstream.version, self.live.version if self.live else None, exc, wait)
            return
        finally:
            self._starting = None
        self._spawn(self._keep_running(upstream, started=True))
        if self._desired is not None and self._desired.version == upstream.version:
            self._switch(upstream, cold=True)
        else:  # the alias moved on while it started: keep it as a warm spare
            self._update_rollout(record, state="superseded")
            self._keep_warm(upstream)
        self.reconcile()

    def _update_rollout(self, record: dict, **changes) -> None:
        """Update what /health shows about a rollout, unless a later switch has replaced it."""
        if self.rollout is record:
            self.rollout = {**record, **changes}

    def _switch(self, upstream: ManagedUpstream, cold: bool) -> None:
        """The atomic part: one assignment; requests already sent finish where they went."""
        previous = self.live
        if upstream in self.warm:
            self.warm.remove(upstream)
        self.live = upstream
        self.events["rollout_done"] += 1
        _logger.info("switched from version %s to version %s (%s)", previous.version if previous else None,
                     upstream.version, "newly started" if cold else "warm")
        self.rollout = {"version": upstream.version, "from_version": previous.version if previous else None,
                        "state": "switched", "cold": cold, "at": time.time()}
        if isinstance(previous, ManagedUpstream):
            if previous.state == "ready":
                self._keep_warm(previous)
            else:
                self._forget(previous)

    def _keep_warm(self, upstream: ManagedUpstream) -> None:
        self.warm.insert(0, upstream)
        while len(self.warm) > self.config.keep_warm:
            retired = self.warm.pop()
            retired.retired = True
            _logger.info("version %s is no longer kept warm", retired.version)
            self._spawn(retired.stop(drain_timeout=self.config.timeout))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _logger.error("background task failed", exc_info=task.exception())
