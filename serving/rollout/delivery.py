"""A delivery: the new version takes an exact share of the requests step by step, then all of them for the bake
window, compared with the previous version (``serving.rollout.analysis``); on a breach, traffic goes back at once
and the alias is moved back in the registry (a compare-and-set) with the evidence as version tags."""

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field, replace

from iris_core.contract import MoveKind, RolloutOutcome, Tag
from iris_core.errors import RegistryUnavailable
from iris_core.resolver import Resolved
from serving.rollout.analysis import Comparison, Finding, Thresholds, analyse
from serving.rollout.shadow import ShadowScorer, class_of
from serving.rollout.state import Rollout, RolloutState
from serving.upstreams.call_stats import CallStats
from serving.upstreams.forwarding import Route
from serving.upstreams.servers import Upstream, UpstreamState

_logger = logging.getLogger(__name__)

ANALYSIS_INTERVAL_S = 0.5  # how often a delivery compares the new version with the previous one
_RANDOM = random.SystemRandom()


class CanaryRoute(Route):
    """What ``Router.choose`` hands out for the canary's share: the new version while its canary lasts, else the live.

    A request routed to the canary but still queued when the canary ends (rolled back or
    stopped) goes to the version that serves then, instead of failing on a stopped server.
    """

    def __init__(self, router: "Delivering"):
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


class Delivering:
    """The part of ``Router`` that runs a delivery: the canary's share, the steps, the analysis, the rollback."""

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

    async def _tag(self, version: str, tags: dict[str, str]) -> None:
        try:
            await self.writer.set_version_tags(version, tags)
        except RegistryUnavailable as exc:
            _logger.warning("could not tag version %s with its rollout outcome: %s", version, exc)


def _add_mix(mix: dict, classes: list) -> None:
    """One request's classes into a mix of requests: each of its n rows adds 1/n to its class."""
    if classes:
        weight = 1 / len(classes)
        for name in classes:
            mix[name] = mix.get(name, 0.0) + weight


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
