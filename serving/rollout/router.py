"""Which upstream answers: the live one, switched when the alias moves, in steps when asked, and back when worse.

The router owns the managed upstreams. It keeps the live one running (restarting it with
backoff when it dies or hangs), follows the alias by polling the registry (at once when a
registry webhook prompts it: ``serving.registry.webhooks``), brings a new version up beside the live
one and switches only once it answers the canary row, and keeps the previous ones warm
(``--keep-warm``) so a rollback is a pointer swap, not a 6 s start. Whatever fails, the
live upstream keeps serving; ``/health`` says what went wrong.

With ``--canary`` steps or a ``--bake`` window, the switch is a delivery: the new version
takes an exact share of the requests step by step (``choose``), then all of them
for the bake window, while the previous version stays warm and the analysis
(``serving.rollout.analysis``) compares the two every ``analysis_interval_s``. On a breach, all
traffic goes back to the previous version at once; then the alias is moved back in the
registry only if it still points at the bad version (a compare-and-set, so that several
replicas move it once), recorded as an ``auto-rollback``, and the bad version is tagged
with the evidence. The router does not roll that version out again until the alias moves
to it again. Moving the alias away during a delivery stops it at once.

What counts in the comparison is what the router chose, never what a client chose. Only
requests that name no version (``/invocations``, ``/predict``, an unversioned V2 infer)
count: a V2 infer that names a version is answered by it and counts nowhere (its calls
are kept out of the model servers' statistics, and it is not copied). Which of them go to
the new version is drawn at random within each block of 100, so no client can aim a
request at either side. And each request weighs the same whatever its size: the class mix
and the disagreement are shares of requests (a request of n rows adds 1/n for each of its
rows), and a copy carries at most ``serving.rollout.shadow.COPY_ROWS`` of a request's rows, so a
large request is compared, not dropped. The error rate and the latency are per call to
the model servers, of routed requests only.

Before a version's model server starts, the router learns what the version is from the
registry (``serving.registry.model_facts``: its table contract, outputs and readiness check); a
version it cannot learn, or cannot serve (no signature), fails its rollout as a start
failure would, and the live version serves on. Two versions may read different feature
sets: copies of one's requests go to the other (the delivery's comparison, the shadow)
only when both read the same features.

The router's only contact with processes and the registry is through the upstreams it
makes (``make_upstream``), the lookup and the facts it is given, so the state machine runs
in process against fakes in the tests.

The router coordinates; each job is a module of its own, mixed into ``Router``:
``supervision`` (restarts with backoff, warm spares), ``following`` (alias polling),
``switching`` (warm or newly started versions), ``delivery`` (canary steps, analysis,
automatic rollback); ``state`` holds what ``/health`` shows.
"""

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import aiohttp

from iris_core.resolver import Resolved
from serving.registry.base import RegistryLookup, RegistryState, RegistryWriter
from serving.registry.model_facts import VersionFacts
from serving.rollout.delivery import ANALYSIS_INTERVAL_S, CanaryRoute, Delivering, Delivery
from serving.rollout.following import VERDICTS_REFRESH_S, Following
from serving.rollout.shadowing import Shadowing
from serving.rollout.state import Events, Rollout
from serving.rollout.supervision import RESTART_BACKOFF_S, RESTART_STABLE_S, Supervision
from serving.rollout.switching import ROLLOUT_BACKOFF_S, Switching
from serving.upstreams.servers import ExternalUpstream, ManagedUpstream, Upstream, UpstreamState

_logger = logging.getLogger(__name__)


class Router(Supervision, Following, Switching, Delivering):
    """Holds ``live`` (read on every request), the warm upstreams, and the rollout state."""

    def __init__(
        self,
        config,
        initial: Resolved | None,
        lookup: RegistryLookup | None = None,
        make_upstream: Callable[[Resolved], Upstream] | None = None,
        writer: RegistryWriter | None = None,
        facts: VersionFacts | None = None,
    ):
        self.config = config
        self.model = config.model
        self.lookup = lookup
        self.writer = writer or lookup  # the helper process both reads and writes
        self.facts = facts or VersionFacts(lookup)
        self.make_upstream = make_upstream or self._managed
        self.live: Upstream | None = None
        self.canary: Upstream | None = None  # during a canary step: the new version, taking ``share`` percent
        self.share = 0
        self.canary_route = CanaryRoute(self)
        self.delivery: Delivery | None = None
        self.analysis_interval_s = ANALYSIS_INTERVAL_S
        self.host = socket.gethostname()
        self.shadowing = (
            Shadowing(config, self.make_upstream, self.prepare, lookup, self.writer, self._spawn)
            if config.shadow and lookup is not None
            else None
        )
        self.warm: list[Upstream] = []
        self.rollout: Rollout | None = None
        self.registry: dict = {
            "state": RegistryState.OK if initial else RegistryState.NOT_USED,
            "checked_at": time.time(),
        }
        self.events = Events()
        self.verdicts: tuple[str, dict[str, str]] | None = None  # (version, the monitor's verdict tags on it)
        self.verdicts_refresh_s = VERDICTS_REFRESH_S
        self._verdicts_read_at = 0.0
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
        self._block: list[bool] = []  # the rest of this block of 100 requests: True for each that goes to the canary
        self._rejected: set[str] = set()  # versions rolled back, not tried again until the alias moves to them again
        self._unrecorded: tuple | None = None  # an automatic rollback the registry has not taken yet
        self._recording = False
        self._prompted = asyncio.Event()  # poll_now: ask the registry before the poll interval is up
        if config.upstream:
            version = initial.version if initial else (self.model.version or "unknown")
            run_id = initial.run_id if initial else None
            self.live = ExternalUpstream(config.upstream, version, run_id, self.facts.known(version))
        else:
            self.live = self.make_upstream(initial)

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the live upstream and the alias watcher in the background; returns at once."""
        self._session = session
        if self.live is not None and self.live.managed:
            self._spawn(self._keep_running(self.live, started=False))
        if self.shadowing is not None:
            self.shadowing.start(session)
        if (self.config.follows_alias or self.shadowing is not None) and self.lookup is not None:
            self._spawn(self._follow())

    async def close(self) -> None:
        """Stop watching and stop every upstream we started; requests have drained by now."""
        # Listed before cancelling: a cancelled start forgets its upstream, which must still stop.
        delivered = [self.delivery.candidate, self.delivery.baseline] if self.delivery else []
        managed = [u for u in [self.live, self._starting, *self.warm, *delivered] if u is not None and u.managed]
        managed = list(dict.fromkeys(managed))
        if self.delivery is not None:
            await self.delivery.compare.close()
        if self.shadowing is not None:
            await self.shadowing.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(u.stop(drain_timeout=self.config.timeout) for u in managed), return_exceptions=True)
        if self.lookup is not None:
            self.lookup.close()

    def observe(self, outcome) -> None:
        """Every scoring request's outcome (a ``serving.app`` recorder): the delivery's counts and copies start here.

        A request that named its version (``pinned``) is not the router's choice: it counts
        for no delivery.
        """
        if outcome.predictions is None:
            return
        delivery = self.delivery
        if delivery is not None and not outcome.pinned:
            delivery.observe(outcome)
        if self.shadowing is not None:
            self.shadowing.observe(outcome, self.live)

    def upstream_for(self, version: str) -> Upstream | None:
        """The upstream serving ``version`` now: live, in a delivery, or warm and ready; None otherwise."""
        return next((u for u in self._loaded() if u.version == version), None)

    def loaded_versions(self) -> list[str]:
        """The versions ``upstream_for`` can answer with, live first."""
        return list(dict.fromkeys(u.version for u in self._loaded()))

    def _loaded(self) -> list[Upstream]:
        delivered = [self.delivery.candidate, self.delivery.baseline] if self.delivery else []
        ready = [u for u in [*delivered, *self.warm] if u.state == UpstreamState.READY]
        return ([self.live] if self.live is not None else []) + ready

    async def health(self) -> tuple[bool, dict]:
        live = self.live
        healthy = live is not None and await live.is_up(self._session)
        contract = live.facts.contract if live is not None and live.facts is not None else None
        body = {
            "status": "healthy" if healthy else "degraded",
            "model": {
                "name": self.model.name,
                "alias": self.model.alias,
                "version": live.version if live else None,
                "run_id": live.run_id if live else None,
                "contract": (
                    {"name": contract.name, "origin": contract.origin, "features": len(contract.features)}
                    if contract
                    else None
                ),
            },
            "upstream": live.describe() if live else None,
            "warm": [{"version": u.version, "state": u.state, "pid": u.describe()["pid"]} for u in self.warm],
            "following": self.config.follows_alias,
            "rollout": self.rollout.as_dict() if self.rollout else None,
            "shadow": self.shadowing.describe(live.version if live else None) if self.shadowing else None,
            "registry": self.registry,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }
        return healthy, body

    def _managed(self, target: Resolved) -> ManagedUpstream:
        uri = self.model.version_uri(target.version)
        return ManagedUpstream(uri, target.version, target.run_id, self.config, self.facts.known(target.version))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _logger.error("background task failed", exc_info=task.exception())
