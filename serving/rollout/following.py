"""Following the alias: the registry polled every poll interval (at once when a registry webhook prompts it:
``serving.registry.webhooks``), its answer acted on, and the monitor's verdicts on the served version read."""

import asyncio
import contextlib
import logging
import time

from iris_core.contract import DriftStatus, PerformanceStatus, Tag
from iris_core.errors import RegistryUnavailable
from serving.registry.base import RegistryState

_logger = logging.getLogger(__name__)

VERDICTS_REFRESH_S = 30.0  # how often a poll reads the served version's monitor verdicts again (they change hourly)
# The monitor's verdicts on a version (its tags), with the values it writes; /metrics shows any other as "unknown".
VERDICT_VALUES = {Tag.DRIFT_STATUS: frozenset(DriftStatus), Tag.PERFORMANCE_STATUS: frozenset(PerformanceStatus)}


class Following:
    """The part of ``Router`` that asks the registry where the alias points."""

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
