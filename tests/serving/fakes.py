"""Stand-ins for a model server and the registry, driven by the test, for the batcher and the router in process.

Each fake does what the real part does at the seam the proxy uses (``Upstream.score``,
``start``/``wait_exit``/``stop``, ``RegistryLookup.resolve_async``) and nothing else, so
a test decides exactly when a call returns, fails or hangs.
"""

import asyncio
from dataclasses import dataclass, field

from iris_core.errors import RegistryUnavailable
from iris_core.resolver import Resolved
from serving.forwarding import UpstreamError
from serving.upstream import UpstreamStartError, UpstreamState


@dataclass
class Call:
    """One upstream call as the fake saw it; the test settles it."""

    rows: list
    timeout: float | None = None  # seconds the caller gave the call
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def answer(self) -> None:
        """Answer each row with a record naming its first value, so the test can tell rows apart."""
        self.done.set_result([{"prediction": "setosa", "first_value": row[0]} for row in self.rows])

    def fail(self, status: int = 502) -> None:
        self.done.set_exception(UpstreamError(status, "UPSTREAM_ERROR", "the model server failed to score the rows"))


class FakeScorer:
    """An upstream whose every ``score`` call waits until the test settles it."""

    managed = False

    def __init__(self, version: str = "1"):
        self.version = version
        self.calls: list[Call] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def score(self, session, rows, timeout):
        call = Call(list(rows), timeout)
        self.calls.append(call)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await call.done
        finally:
            self.in_flight -= 1


class FakeServer:
    """A managed model server: starts, runs, dies and stops when the test says."""

    managed = True
    kind = "managed"

    def __init__(self, target: Resolved):
        self.version = target.version
        self.run_id = target.run_id
        self.state = UpstreamState.STARTING
        self.retired = False
        self.inflight = 0
        self.starts = 0
        self.stopped = False
        self._started: asyncio.Future | None = None
        self._exit: asyncio.Future | None = None

    # the test's controls
    def come_up(self) -> None:
        self._started.set_result(None)

    def fail_to_start(self, reason: str = "exited with code 1") -> None:
        self._started.set_exception(UpstreamStartError(reason))

    def die(self, code: int = -9) -> None:
        self._exit.set_result(code)

    @property
    def starting(self) -> bool:
        return self._started is not None and not self._started.done()

    # what the router calls
    async def start(self, session) -> None:
        loop = asyncio.get_running_loop()
        self.starts += 1
        self.state = UpstreamState.STARTING
        self._started, self._exit = loop.create_future(), loop.create_future()
        try:
            await self._started
        except UpstreamStartError:
            self.state = UpstreamState.FAILED
            raise
        self.state = UpstreamState.READY

    async def wait_exit(self) -> int:
        code = await self._exit
        if not self.retired:
            self.state = UpstreamState.DOWN
        return code

    async def stop(self, drain_timeout: float) -> None:
        self.retired, self.stopped, self.state = True, True, UpstreamState.STOPPED
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(0)

    async def is_up(self, session) -> bool:
        return self.state == UpstreamState.READY

    def describe(self) -> dict:
        return {"kind": self.kind, "version": self.version, "state": self.state, "pid": None}


class FakeServers:
    """The router's ``make_upstream``: every server it made, by version, in order."""

    def __init__(self):
        self.made: list[FakeServer] = []

    def __call__(self, target: Resolved) -> FakeServer:
        server = FakeServer(target)
        self.made.append(server)
        return server

    def latest(self, version: str) -> FakeServer:
        return [server for server in self.made if server.version == version][-1]


class FakeLookup:
    """The registry: ``points_to`` a version, to nothing (alias deleted), or ``down``."""

    def __init__(self, version: str | None = None):
        self.answer: str | None = version
        self.down = False
        self.closed = False

    def points_to(self, version: str | None) -> None:
        self.answer, self.down = version, False

    async def resolve_async(self) -> Resolved | None:
        if self.down:
            raise RegistryUnavailable("tracking server unreachable: 127.0.0.1:5000")
        return None if self.answer is None else Resolved(self.answer, f"run-{self.answer}")

    def close(self, wait: bool = False) -> None:
        self.closed = True


async def settle() -> None:
    """Let every task that is ready run until each waits again."""
    for _ in range(20):
        await asyncio.sleep(0)
