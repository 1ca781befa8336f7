"""Keeping a router's model servers up: the live one started again with backoff when it dies or hangs, the
previous ones kept warm (``--keep-warm``) so a rollback is a pointer swap, and the rest stopped."""

import asyncio
import logging
import time

from serving.upstreams.servers import Upstream, UpstreamStartError

_logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 30.0)  # first wait and cap, doubling, before a dead live upstream starts again
RESTART_STABLE_S = 60.0  # the wait goes back to the first only after a server stayed up this long


class Supervision:
    """The part of ``Router`` that keeps its upstreams running, warm or stopped."""

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

    def _retire(self, upstream: Upstream) -> None:
        upstream.retired = True
        self._spawn(upstream.stop(drain_timeout=self.config.timeout))

    def _keep_warm(self, upstream: Upstream) -> None:
        self.warm.insert(0, upstream)
        while len(self.warm) > self.config.keep_warm:
            retired = self.warm.pop()
            retired.retired = True
            _logger.info("version %s is no longer kept warm", retired.version)
            self._spawn(retired.stop(drain_timeout=self.config.timeout))
