"""Which upstream answers: the live one, switched atomically when the alias moves (blue/green).

The router owns the managed upstreams. It keeps the live one running (restarting it with
backoff when it dies or hangs), follows the alias by polling the registry, brings a new version up
beside the live one and switches only once it answers the canary, and keeps the previous
ones warm (``--keep-warm``) so a rollback is a pointer swap, not a 6 s start. Whatever
fails, the live upstream keeps serving; ``/health`` says what went wrong.

The router's only contact with processes and the registry is through the upstreams it
makes (``make_upstream``) and the lookup it is given, so the state machine runs in process
against fakes in the tests.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

import aiohttp

from iris_core.resolver import Resolved
from serving.registry import RegistryLookup, RegistryUnavailable
from serving.upstream import ExternalUpstream, ManagedUpstream, Upstream, UpstreamStartError, UpstreamState

_logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 30.0)  # first wait and cap, doubling, before a dead live upstream starts again
RESTART_STABLE_S = 60.0  # the wait goes back to the first only after a server stayed up this long
ROLLOUT_BACKOFF_S = (5.0, 300.0)  # the same for another try at a version that failed to start


class RolloutState(StrEnum):
    STARTING = "starting"  # the new version's model server is starting beside the live one
    SWITCHED = "switched"  # traffic moved to it
    FAILED = "failed"  # it did not start; tried again after ``retry_in_s``
    ABANDONED = "abandoned"  # it failed, and the alias moved back to the live version
    SUPERSEDED = "superseded"  # the alias moved on while it started: kept warm, not switched to


class RegistryState(StrEnum):
    OK = "ok"
    NOT_USED = "not_used"  # --upstream without a version to look up
    UNREACHABLE = "unreachable"
    ALIAS_MISSING = "alias_missing"


@dataclass(frozen=True)
class Rollout:
    """The last move towards a version, as ``/health`` shows it (fields that do not apply are left out)."""

    version: str
    from_version: str | None
    state: RolloutState
    attempt: int | None = None
    started_at: float | None = None
    error: str | None = None
    retry_in_s: float | None = None
    cold: bool | None = None
    at: float | None = None

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None or key == "from_version"}


@dataclass
class Events:
    """What happened since start, counted for ``/metrics``."""

    restarts: int = 0
    rollouts_done: int = 0
    rollouts_failed: int = 0


class Router:
    """Holds ``live`` (read on every request), the warm upstreams, and the rollout state."""

    def __init__(
        self,
        config,
        initial: Resolved | None,
        lookup: RegistryLookup | None = None,
        make_upstream: Callable[[Resolved], Upstream] | None = None,
    ):
        self.config = config
        self.model = config.model
        self.lookup = lookup
        self.make_upstream = make_upstream or self._managed
        self.live: Upstream | None = None
        self.warm: list[Upstream] = []
        self.rollout: Rollout | None = None
        self.registry: dict = {
            "state": RegistryState.OK if initial else RegistryState.NOT_USED,
            "checked_at": time.time(),
        }
        self.events = Events()
        self.restart_backoff_s = RESTART_BACKOFF_S
        self.restart_stable_s = RESTART_STABLE_S
        self.restart_in_s: float | None = None  # the wait before the live upstream's next start, while it is down
        self.rollout_backoff_s = ROLLOUT_BACKOFF_S
        self.started_at = time.monotonic()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._desired = initial
        self._starting: Upstream | None = None
        self._failures: dict[str, tuple[int, float]] = {}
        if config.upstream:
            version = initial.version if initial else (self.model.version or "unknown")
            self.live = ExternalUpstream(config.upstream, version, initial.run_id if initial else None)
        else:
            self.live = self.make_upstream(initial)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the live upstream and the alias watcher in the background; returns at once."""
        self._session = session
        if self.live is not None and self.live.managed:
            self._spawn(self._keep_running(self.live, started=False))
        if self.config.follows_alias and self.lookup is not None:
            self._spawn(self._follow())

    async def close(self) -> None:
        """Stop watching and stop every upstream we started; requests have drained by now."""
        # Listed before cancelling: a cancelled start forgets its upstream, which must still stop.
        managed = [u for u in [self.live, self._starting, *self.warm] if u is not None and u.managed]
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(u.stop(drain_timeout=self.config.timeout) for u in managed), return_exceptions=True)
        if self.lookup is not None:
            self.lookup.close()

    # -- which upstream serves a version -----------------------------------------------------

    def upstream_for(self, version: str) -> Upstream | None:
        """The upstream serving ``version`` now: the live one, or a warm one that is ready; None otherwise."""
        live = self.live
        if live is not None and live.version == version:
            return live
        return next((u for u in self.warm if u.version == version and u.state == UpstreamState.READY), None)

    def loaded_versions(self) -> list[str]:
        """The versions ``upstream_for`` can answer with, live first."""
        live = [self.live.version] if self.live is not None else []
        return live + [u.version for u in self.warm if u.state == UpstreamState.READY]

    # -- what /health and /version show -----------------------------------------------------

    async def health(self) -> tuple[bool, dict]:
        live = self.live
        healthy = live is not None and await live.is_up(self._session)
        body = {
            "status": "healthy" if healthy else "degraded",
            "model": {
                "name": self.model.name,
                "alias": self.model.alias,
                "version": live.version if live else None,
                "run_id": live.run_id if live else None,
            },
            "upstream": live.describe() if live else None,
            "warm": [{"version": u.version, "state": u.state, "pid": u.describe()["pid"]} for u in self.warm],
            "following": self.config.follows_alias,
            "rollout": self.rollout.as_dict() if self.rollout else None,
            "registry": self.registry,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }
        return healthy, body

    # -- keeping the live upstream up ---------------------------------------------------------

    def _managed(self, target: Resolved) -> ManagedUpstream:
        return ManagedUpstream(self.model.version_uri(target.version), target.version, target.run_id, self.config)

    async def _keep_running(self, upstream: Upstream, started: bool) -> None:
        """Run it until it is retired; when it dies (or hangs and is killed) while live, start it again.

        The wait before each start doubles up to its cap and goes back to the first only
        once a start has stayed up ``restart_stable_s``: a version that starts and soon
        dies is retried ever more slowly, not in a loop at full speed.
        """
        first, cap = self.restart_backoff_s
        delay = first
        while not upstream.retired:
            if not started:
                try:
                    await upstream.start(self._session)
                except UpstreamStartError as exc:
                    _logger.error("model server for version %s failed to start: %s", upstream.version, exc)
                    await self._wait_to_restart(delay)
                    delay = min(delay * 2, cap)
                    continue
            started = False
            up_since = time.monotonic()
            code = await upstream.wait_exit()
            if upstream.retired:
                return
            if upstream is not self.live:
                _logger.error("model server for version %s exited with code %s", upstream.version, code)
                self._forget(upstream)
                return
            if time.monotonic() - up_since >= self.restart_stable_s:
                delay = first
            _logger.error(
                "model server for version %s exited with code %s; starting it again in %g s",
                upstream.version,
                code,
                delay,
            )
            self.events.restarts += 1
            await self._wait_to_restart(delay)
            delay = min(delay * 2, cap)

    async def _wait_to_restart(self, delay: float) -> None:
        self.restart_in_s = delay
        try:
            await asyncio.sleep(delay)
        finally:
            self.restart_in_s = None

    def _forget(self, upstream: Upstream) -> None:
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
            self._registry_state(RegistryState.UNREACHABLE, str(exc))
            return
        if target is None:
            message = f"alias {self.model.alias!r} is not set; serving the last version"
            self._registry_state(RegistryState.ALIAS_MISSING, message)
            return
        self._registry_state(RegistryState.OK, None)
        if self._desired is None or target.version != self._desired.version:
            _logger.info("alias %s now points to version %s", self.model.alias, target.version)
            self._failures.clear()
        self._desired = target
        self.reconcile()

    def _registry_state(self, state: RegistryState, message: str | None) -> None:
        if state != self.registry.get("state"):
            log = _logger.info if state == RegistryState.OK else _logger.warning
            log("registry: %s%s", state, f" ({message})" if message else "")
        self.registry = {"state": state, "message": message, "checked_at": time.time()}

    def reconcile(self) -> None:
        """Move traffic towards the desired version: a warm one at once, else start one beside the live."""
        target = self._desired
        if target is None or (self.live is not None and target.version == self.live.version):
            if self.rollout and self.rollout.state == RolloutState.FAILED:
                self.rollout = replace(self.rollout, state=RolloutState.ABANDONED)
            return
        warm = next((u for u in self.warm if u.version == target.version and u.state == UpstreamState.READY), None)
        if warm is not None:
            self._switch(warm, cold=False)
            return
        if self._starting is not None:
            return  # one start at a time; reconcile runs again when it ends
        attempts, not_before = self._failures.get(target.version, (0, 0.0))
        if time.monotonic() < not_before:
            return
        self._starting = self.make_upstream(target)
        self.rollout = Rollout(
            target.version,
            self.live.version if self.live else None,
            RolloutState.STARTING,
            attempt=attempts + 1,
            started_at=time.time(),
        )
        self._spawn(self._bring_up(self._starting, attempts, self.rollout))

    async def _bring_up(self, upstream: Upstream, attempts: int, record: Rollout) -> None:
        try:
            await upstream.start(self._session)
        except UpstreamStartError as exc:
            first, cap = self.rollout_backoff_s
            wait = min(first * 2**attempts, cap)
            self._failures[upstream.version] = (attempts + 1, time.monotonic() + wait)
            self._update_rollout(record, state=RolloutState.FAILED, error=str(exc), retry_in_s=wait)
            self.events.rollouts_failed += 1
            _logger.error(
                "rollout to version %s failed, still serving version %s: %s (retrying in %g s)",
                upstream.version,
                self.live.version if self.live else None,
                exc,
                wait,
            )
            return
        finally:
            self._starting = None
        self._spawn(self._keep_running(upstream, started=True))
        if self._desired is not None and self._desired.version == upstream.version:
            self._switch(upstream, cold=True)
        else:  # the alias moved on while it started: keep it as a warm spare
            self._update_rollout(record, state=RolloutState.SUPERSEDED)
            self._keep_warm(upstream)
        self.reconcile()

    def _update_rollout(self, record: Rollout, **changes) -> None:
        """Update what /health shows about a rollout, unless a later switch has replaced it."""
        if self.rollout is record:
            self.rollout = replace(record, **changes)

    def _switch(self, upstream: Upstream, cold: bool) -> None:
        """The atomic part: one assignment; requests already sent finish where they went."""
        previous = self.live
        if upstream in self.warm:
            self.warm.remove(upstream)
        self.live = upstream
        self.events.rollouts_done += 1
        _logger.info(
            "switched from version %s to version %s (%s)",
            previous.version if previous else None,
            upstream.version,
            "newly started" if cold else "warm",
        )
        self.rollout = Rollout(
            upstream.version, previous.version if previous else None, RolloutState.SWITCHED, cold=cold, at=time.time()
        )
        if previous is not None and previous.managed:
            if previous.state == UpstreamState.READY:
                self._keep_warm(previous)
            else:
                self._forget(previous)

    def _keep_warm(self, upstream: Upstream) -> None:
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
