"""Which upstream answers: the live one, switched when the alias moves, in steps when asked, and back when worse.

The router owns the managed upstreams. It keeps the live one running (restarting it with
backoff when it dies or hangs), follows the alias by polling the registry (at once when a
registry webhook prompts it: ``serving.webhooks``), brings a new version up beside the live
one and switches only once it answers the canary row, and keeps the previous ones warm
(``--keep-warm``) so a rollback is a pointer swap, not a 6 s start. Whatever fails, the
live upstream keeps serving; ``/health`` says what went wrong.

With ``--canary`` steps or a ``--bake`` window, the switch is a delivery: the new version
takes an exact share of the requests step by step (``choose``), then all of them
for the bake window, while the previous version stays warm and the analysis
(``serving.analysis``) compares the two every ``analysis_interval_s``. On a breach, all
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
rows), and a copy carries at most ``serving.shadow.COPY_ROWS`` of a request's rows, so a
large request is compared, not dropped. The error rate and the latency are per call to
the model servers, of routed requests only.

Before a version's model server starts, the router learns what the version is from the
registry (``serving.model_facts``: its table contract, outputs and readiness check); a
version it cannot learn, or cannot serve (no signature), fails its rollout as a start
failure would, and the live version serves on. Two versions may read different feature
sets: copies of one's requests go to the other (the delivery's comparison, the shadow)
only when both read the same features.

The router's only contact with processes and the registry is through the upstreams it
makes (``make_upstream``), the lookup and the facts it is given, so the state machine runs
in process against fakes in the tests.
"""

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

import aiohttp

from iris_core.contract import DriftStatus, MoveKind, PerformanceStatus, RolloutOutcome, Tag
from iris_core.resolver import Resolved
from iris_core.table.contract import ContractError
from serving.analysis import CallStats, Comparison, Finding, Thresholds, analyse
from serving.forwarding import Route
from serving.model_facts import VersionFacts
from serving.registry import RegistryLookup, RegistryUnavailable, RegistryWriter
from serving.shadow import ShadowScorer, class_of
from serving.shadowing import Shadowing
from serving.upstream import ExternalUpstream, ManagedUpstream, Upstream, UpstreamStartError, UpstreamState

_logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 30.0)  # first wait and cap, doubling, before a dead live upstream starts again
RESTART_STABLE_S = 60.0  # the wait goes back to the first only after a server stayed up this long
ROLLOUT_BACKOFF_S = (5.0, 300.0)  # the same for another try at a version that failed to start
ANALYSIS_INTERVAL_S = 0.5  # how often a delivery compares the new version with the previous one
VERDICTS_REFRESH_S = 30.0  # how often a poll reads the served version's monitor verdicts again (they change hourly)
# The monitor's verdicts on a version (its tags), with the values it writes; /metrics shows any other as "unknown".
VERDICT_VALUES = {Tag.DRIFT_STATUS: frozenset(DriftStatus), Tag.PERFORMANCE_STATUS: frozenset(PerformanceStatus)}


class RolloutState(StrEnum):
    STARTING = "starting"  # the new version's model server is starting beside the live one
    SWITCHED = "switched"  # traffic moved to it
    FAILED = "failed"  # it did not start; tried again after ``retry_in_s``
    ABANDONED = "abandoned"  # it failed, and the alias moved back to the live version
    SUPERSEDED = "superseded"  # the alias moved on while it started: kept warm, not switched to
    CANARY = "canary"  # it takes ``share`` percent of the requests, the previous version the rest
    BAKING = "baking"  # it takes all requests; the previous version is kept warm and compared
    COMPLETED = "completed"  # it passed every step and the bake window
    ROLLED_BACK = "rolled_back"  # the analysis found it worse: traffic went back to the previous version
    STOPPED = "stopped"  # the alias moved away during the delivery: traffic went back to the previous version


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
    share: int | None = None  # percent of requests the new version takes now (delivery)
    step: str | None = None  # "2/3": which of the --canary steps
    checks: dict | None = None  # the analysis's latest figures (delivery)
    reason: str | None = None  # why it was rolled back or stopped
    registry: str | None = None  # what happened to the alias after an automatic rollback

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None or key == "from_version"}


@dataclass
class Events:
    """What happened since start, counted for ``/metrics``."""

    restarts: int = 0
    rollouts_done: int = 0
    rollouts_failed: int = 0
    rollouts_rolled_back: int = 0
    rollouts_stopped: int = 0
    compare_dropped_rows: int = 0  # copies of a delivered version's requests its baseline's queue could not take


class CanaryRoute(Route):
    """What ``Router.choose`` hands out for the canary's share: the new version while its canary lasts, else the live.

    A request routed to the canary but still queued when the canary ends (rolled back or
    stopped) goes to the version that serves then, instead of failing on a stopped server.
    """

    def __init__(self, router: "Router"):
        self._router = router

    def current(self):
        return self._router.canary or self._router.live


@dataclass(eq=False)
class Delivery:
    """One rollout in steps: the two versions, where their counts stood at the start, and the background copies."""

    candidate: Upstream
    baseline: Upstream
    compare: ShadowScorer  # the baseline scores copies of the candidate's requests
    candidate_start: CallStats
    baseline_start: CallStats
    record: Rollout
    task: asyncio.Task | None = None
    finding: Finding | None = None
    # Answered requests by predicted class, each request weighing one (its rows 1/n each):
    # the candidate's own, and the baseline's own and on the copies it scored.
    classes: tuple[dict, dict] = field(default_factory=lambda: ({}, {}))
    compared: int = 0  # copies of the candidate's requests the baseline answered
    disagreed: float = 0.0  # the sum over them of the share of rows answered with another class

    def observe(self, outcome) -> None:
        """A routed request's answer: into its version's class mix; the candidate's also copied to the baseline."""
        if outcome.version == self.candidate.version:
            _add_mix(self.classes[0], [class_of(record) for record in outcome.predictions])
            if self.candidate.layout == self.baseline.layout:  # the baseline reads the same features
                self.compare.offer(outcome.rows, outcome.predictions, outcome.version)
        elif outcome.version == self.baseline.version:
            _add_mix(self.classes[1], [class_of(record) for record in outcome.predictions])

    def compared_copy(self, reference: str, pairs: list[tuple[str, str]]) -> None:
        """The baseline's answers to one copied request: its disagreement, and its classes into the baseline's mix."""
        if pairs:
            self.compared += 1
            self.disagreed += sum(mine != theirs for mine, theirs in pairs) / len(pairs)
            _add_mix(self.classes[1], [theirs for _, theirs in pairs])


class Router:
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

    # -- life cycle ------------------------------------------------------------------------

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

    # -- which upstream serves a version -----------------------------------------------------

    def choose(self) -> CanaryRoute | None:
        """Where one scoring request goes: the canary route for exactly its share of them, else None (the live one).

        Of each block of 100 requests from the start of a step, exactly ``share`` go to the
        canary, so the requests it can fail are bounded by its share; which ones is drawn
        at random (from the system's random source) for each block, so that no client can
        aim a request at either version, as it could at a fixed pattern that every
        answer's ``X-Model-Version`` shows.
        """
        if self.canary is None:
            return None
        if not self._block:
            self._block = [True] * self.share + [False] * (100 - self.share)
            _RANDOM.shuffle(self._block)
        return self.canary_route if self._block.pop() else None

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

    # -- what /health and /version show -----------------------------------------------------

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

    # -- keeping the live upstream up ---------------------------------------------------------

    def _managed(self, target: Resolved) -> ManagedUpstream:
        uri = self.model.version_uri(target.version)
        return ManagedUpstream(uri, target.version, target.run_id, self.config, self.facts.known(target.version))

    async def prepare(self, upstream: Upstream) -> None:
        """Learn what the upstream's version is before it starts; UpstreamStartError when that cannot be done."""
        if upstream.facts is not None:
            return
        try:
            upstream.facts = await self.facts.get(upstream.version, self.config.timeout)
        except (RegistryUnavailable, ContractError) as exc:
            raise UpstreamStartError(f"version {upstream.version}: {exc}") from None

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
            if not self._in_use(upstream):
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

    def _in_use(self, upstream: Upstream) -> bool:
        """Live, or one of the two versions of a delivery: started again when it dies."""
        delivery = self.delivery
        return upstream is self.live or (delivery is not None and upstream in (delivery.candidate, delivery.baseline))

    def _forget(self, upstream: Upstream) -> None:
        if upstream in self.warm:
            self.warm.remove(upstream)
        self._spawn(upstream.stop(drain_timeout=0))

    # -- following the alias ----------------------------------------------------------------

    def follows(self, alias: str) -> bool:
        """Whether a move of this alias of the served model concerns this router: the alias it serves, or shadows."""
        if self.lookup is None:
            return False
        return (self.config.follows_alias and alias == self.model.alias) or (
            self.shadowing is not None and alias == self.config.shadow
        )

    def poll_now(self) -> None:
        """Poll the registry now instead of at the end of the poll interval (a registry webhook's prompt).

        Only a prompt: the poll reads the registry as every poll does. Prompts that come
        while a poll runs make one more poll after it, never two polls at once.
        """
        self._prompted.set()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._prompted.wait(), self.config.poll_interval)
            self._prompted.clear()
            if self.config.follows_alias:
                await self.poll()
            if self.shadowing is not None:
                await self.shadowing.poll(self._serving_versions())

    def _serving_versions(self) -> set[str]:
        delivery = self.delivery
        versions = {self.live.version} if self.live is not None else set()
        return versions | ({delivery.candidate.version} if delivery else set())

    async def poll(self) -> None:
        """Ask the registry where the alias points and act on the answer."""
        if self._unrecorded is not None and not self._recording:
            self._spawn(self._record_rollback())
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
        self._rejected &= {target.version}  # the alias left a rolled-back version: it may be tried when it returns
        self._desired = target
        self.reconcile()
        await self._read_verdicts()

    async def _read_verdicts(self) -> None:
        """The monitor's verdicts on the served version (its ``drift_status`` and ``performance_status`` tags),
        for ``/metrics``: read again when the served version changes or ``verdicts_refresh_s`` have passed;
        the last ones read stay while the registry does not answer."""
        live = self.live
        if live is None or (
            self.verdicts is not None
            and self.verdicts[0] == live.version
            and time.monotonic() - self._verdicts_read_at < self.verdicts_refresh_s
        ):
            return
        try:
            tags = await self.lookup.version_tags(live.version)
        except RegistryUnavailable as exc:
            _logger.debug("could not read the tags of version %s: %s", live.version, exc)
            return
        self._verdicts_read_at = time.monotonic()
        self.verdicts = (
            live.version,
            {
                key: tags[key] if tags[key] in known else "unknown"
                for key, known in VERDICT_VALUES.items()
                if key in tags
            },
        )

    def _registry_state(self, state: RegistryState, message: str | None) -> None:
        if state != self.registry.get("state"):
            log = _logger.info if state == RegistryState.OK else _logger.warning
            log("registry: %s%s", state, f" ({message})" if message else "")
        self.registry = {"state": state, "message": message, "checked_at": time.time()}

    def reconcile(self) -> None:
        """Move traffic towards the desired version: a warm one at once, else start one beside the live."""
        target = self._desired
        delivery = self.delivery
        if delivery is not None and (target is None or target.version != delivery.candidate.version):
            self._stop_delivery(delivery, target)
        if target is None or (self.live is not None and target.version == self.live.version):
            if self.rollout and self.rollout.state == RolloutState.FAILED:
                self.rollout = replace(self.rollout, state=RolloutState.ABANDONED)
            self._reconcile_shadow()
            return
        if self.delivery is not None or target.version in self._rejected:
            return
        warm = next((u for u in self.warm if u.version == target.version and u.state == UpstreamState.READY), None)
        if warm is None and self.shadowing is not None:
            warm = self.shadowing.take(target.version)
            if warm is not None:
                self._spawn(self._keep_running(warm, started=True))
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
            await self.prepare(upstream)
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

    def _reconcile_shadow(self) -> None:
        if self.shadowing is not None:
            self.shadowing.reconcile(self._serving_versions())

    def _switch(self, upstream: Upstream, cold: bool) -> None:
        """The atomic part: one assignment; requests already sent finish where they went."""
        previous = self.live
        if self.config.delivers and previous is not None and previous.managed and previous.state == UpstreamState.READY:
            self._deliver(upstream, cold)
            return
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
        self._reconcile_shadow()

    # -- delivery: canary steps, bake window, automatic rollback ---------------------------------

    def _deliver(self, upstream: Upstream, cold: bool) -> None:
        """Start a delivery of ``upstream``: the live version stays live (and warm) as its baseline."""
        baseline = self.live
        if upstream in self.warm:
            self.warm.remove(upstream)
        compare = ShadowScorer(
            baseline,
            self._session,
            rate=self.config.compare_rate,
            timeout=self.config.timeout,
            max_batch_rows=self.config.max_batch_rows,
        )
        record = Rollout(upstream.version, baseline.version, RolloutState.CANARY, cold=cold, started_at=time.time())
        delivery = Delivery(upstream, baseline, compare, upstream.stats.snapshot(), baseline.stats.snapshot(), record)
        compare.on_compared = delivery.compared_copy
        compare.on_dropped = self._compare_dropped
        compare.start()
        self.delivery, self.rollout = delivery, record
        _logger.info(
            "delivering version %s in steps %s (then %g s of bake), compared with version %s",
            upstream.version,
            ",".join(map(str, self.config.canary)),
            self.config.bake,
            baseline.version,
        )
        delivery.task = self._spawn(self._run_delivery(delivery))
        self._reconcile_shadow()

    async def _run_delivery(self, delivery: Delivery) -> None:
        steps = self.config.canary
        for number, share in enumerate(steps, 1):
            if share < 100:
                self.canary, self.share, self._block = delivery.candidate, share, []
                state, seconds = RolloutState.CANARY, self.config.canary_step
            else:
                self._take_over(delivery)
                state, seconds = RolloutState.BAKING, self.config.bake
            self._update_delivery(delivery, state=state, share=share, step=f"{number}/{len(steps)}")
            if not await self._watch(delivery, seconds):
                return
        self._complete(delivery)

    async def _watch(self, delivery: Delivery, seconds: float) -> bool:
        """Analyse every ``analysis_interval_s`` for ``seconds`` (once at least); False once it rolled back."""
        deadline = time.monotonic() + seconds
        while True:
            finding = self._analyse(delivery)
            if finding.breach:
                self._roll_back(delivery, finding)
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(self.analysis_interval_s, remaining))

    def _analyse(self, delivery: Delivery) -> Finding:
        candidate = delivery.candidate.stats.since(delivery.candidate_start)
        baseline = delivery.baseline.stats.since(delivery.baseline_start)
        candidate.classes, baseline.classes = (dict(mix) for mix in delivery.classes)
        compared = Comparison(delivery.compared, delivery.disagreed)
        finding = analyse(candidate, baseline, compared, Thresholds.of(self.config))
        delivery.finding = finding
        self._update_delivery(delivery, checks=finding.figures)
        return finding

    def _compare_dropped(self, rows: int) -> None:
        self.events.compare_dropped_rows += rows

    def _update_delivery(self, delivery: Delivery, **changes) -> None:
        delivery.record = replace(delivery.record, **changes)
        if self.delivery is delivery:
            self.rollout = delivery.record

    def _take_over(self, delivery: Delivery) -> None:
        """The last step: every request to the new version; the previous one stays warm, compared, off the list."""
        self.canary, self.share = None, 0
        self.live = delivery.candidate
        self.events.rollouts_done += 1
        _logger.info("switched from version %s to version %s", delivery.baseline.version, delivery.candidate.version)
        self._update_delivery(delivery, at=time.time())

    def _complete(self, delivery: Delivery) -> None:
        self._end_delivery(delivery)
        self._update_delivery(delivery, state=RolloutState.COMPLETED, at=time.time())
        self.rollout = delivery.record
        _logger.info("version %s passed its canary steps and bake window", delivery.candidate.version)
        self._keep_warm(delivery.baseline)
        tags = {Tag.ROLLOUT_OUTCOME: RolloutOutcome.COMPLETED, Tag.ROLLOUT_BY: self.host, Tag.ROLLOUT_AT: _utc()}
        self._spawn(self._tag(delivery.candidate.version, tags))

    def _roll_back(self, delivery: Delivery, finding: Finding) -> None:
        """All traffic back to the previous version now; the registry follows in the background."""
        bad, previous = delivery.candidate, delivery.baseline
        self.canary, self.share = None, 0
        self.live = previous
        self._end_delivery(delivery)
        self._rejected.add(bad.version)
        self.events.rollouts_rolled_back += 1
        reason = (
            f"canary analysis of version {bad.version} against version {previous.version} at "
            f"{delivery.record.share}% of requests: " + "; ".join(finding.breaches)
        )
        self._update_delivery(delivery, state=RolloutState.ROLLED_BACK, reason=reason, at=time.time())
        self.rollout = delivery.record
        _logger.error("rolled back from version %s to version %s: %s", bad.version, previous.version, reason)
        self._retire(bad)
        evidence = {"reason": reason, "checks": finding.figures}
        self._unrecorded = (bad.version, previous.version, reason, evidence, delivery.record)
        self._spawn(self._record_rollback())

    async def _record_rollback(self) -> None:
        """Move the alias back if it still names the bad version, and tag that version; again next poll on failure."""
        if self._unrecorded is None or self._recording:
            return
        self._recording = True
        bad, previous, reason, evidence, record = self._unrecorded
        try:
            moved = await self.writer.move_alias_if(
                self.model.alias, bad, previous, how=MoveKind.AUTO_ROLLBACK, reason=reason, by=self.host
            )
            tags = {
                Tag.ROLLOUT_OUTCOME: RolloutOutcome.ROLLED_BACK,
                Tag.ROLLOUT_EVIDENCE: json.dumps(evidence, sort_keys=True, default=str),
                Tag.ROLLOUT_BY: self.host,
                Tag.ROLLOUT_AT: _utc(),
            }
            await self.writer.set_version_tags(bad, tags)
        except RegistryUnavailable as exc:
            note = f"not recorded yet, retried every poll: {exc}"
            _logger.warning("automatic rollback of version %s %s", bad, note)
        else:
            self._unrecorded = None
            if moved:
                note = f"moved @{self.model.alias} back from version {bad} to version {previous}"
            else:
                note = f"@{self.model.alias} no longer named version {bad}: left as it was"
            _logger.info("automatic rollback of version %s: %s", bad, note)
        finally:
            self._recording = False
        if self.rollout is record or (self.rollout and self.rollout.reason == record.reason):
            self.rollout = replace(self.rollout, registry=note)

    def _stop_delivery(self, delivery: Delivery, target: Resolved | None) -> None:
        """The alias moved away: every request back to the previous version, the new one kept warm."""
        if delivery.task is not None and delivery.task is not asyncio.current_task():
            delivery.task.cancel()
        self.canary, self.share = None, 0
        self.live = delivery.baseline
        self._end_delivery(delivery)
        self.events.rollouts_stopped += 1
        where = f"version {target.version}" if target else "no version"
        reason = f"the alias moved to {where} during the delivery"
        self._update_delivery(delivery, state=RolloutState.STOPPED, reason=reason, at=time.time())
        self.rollout = delivery.record
        _logger.warning(
            "delivery of version %s stopped: %s; every request back on version %s",
            delivery.candidate.version,
            reason,
            delivery.baseline.version,
        )
        if delivery.candidate.state == UpstreamState.READY:
            self._keep_warm(delivery.candidate)
        else:
            self._forget(delivery.candidate)

    def _end_delivery(self, delivery: Delivery) -> None:
        self.delivery = None
        self._spawn(delivery.compare.close())
        self._reconcile_shadow()

    def _retire(self, upstream: Upstream) -> None:
        upstream.retired = True
        self._spawn(upstream.stop(drain_timeout=self.config.timeout))

    async def _tag(self, version: str, tags: dict[str, str]) -> None:
        try:
            await self.writer.set_version_tags(version, tags)
        except RegistryUnavailable as exc:
            _logger.warning("could not tag version %s with its rollout outcome: %s", version, exc)

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


_RANDOM = random.SystemRandom()


def _add_mix(mix: dict, classes: list) -> None:
    """One request's classes into a mix of requests: each of its n rows adds 1/n to its class."""
    if classes:
        weight = 1 / len(classes)
        for name in classes:
            mix[name] = mix.get(name, 0.0) + weight


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
