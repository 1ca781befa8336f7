"""Switching to the version the alias names: a warm one at once, else one started beside the live version and
switched to only once it answers the canary row; a start that fails is tried again with backoff."""

import logging
import time
from dataclasses import replace

from iris_core.errors import RegistryUnavailable
from iris_core.table.contract import ContractError
from serving.rollout.state import Rollout, RolloutState
from serving.upstreams.servers import Upstream, UpstreamStartError, UpstreamState

_logger = logging.getLogger(__name__)

ROLLOUT_BACKOFF_S = (5.0, 300.0)  # the same for another try at a version that failed to start


class Switching:
    """The part of ``Router`` that moves traffic towards the desired version."""

    async def prepare(self, upstream: Upstream) -> None:
        """Learn what the upstream's version is before it starts; UpstreamStartError when that cannot be done."""
        if upstream.facts is not None:
            return
        try:
            upstream.facts = await self.facts.get(upstream.version, self.config.timeout)
        except (RegistryUnavailable, ContractError) as exc:
            raise UpstreamStartError(f"version {upstream.version}: {exc}") from None

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
