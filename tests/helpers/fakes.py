"""Stand-ins for a model server and the registry, driven by the test, for the batcher and the router in process.

Each fake does what the real part does at the seam the proxy uses (``Upstream.score``,
``start``/``wait_exit``/``stop``, ``RegistryLookup.resolve_async`` and the registry writes
``set_version_tags`` and ``move_alias_if``) and nothing else, so a test decides exactly
when a call returns, fails or hangs.
"""

import asyncio
import time
from dataclasses import dataclass, field

from iris_core.errors import RegistryUnavailable
from iris_core.resolver import Resolved
from serving.registry.model_facts import standing_in
from serving.upstreams.call_stats import CallStats
from serving.upstreams.forwarding import UpstreamError
from serving.upstreams.servers import UpstreamStartError, UpstreamState

IRIS_FACTS = standing_in()  # what the registry says of every fake version: this project's Iris model


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

    def __init__(self, version: str = "1", facts=IRIS_FACTS):
        self.version = version
        self.facts = facts
        self.calls: list[Call] = []
        self.in_flight = 0
        self.most_in_flight = 0

    @property
    def layout(self):
        return self.facts.layout

    async def score(self, session, rows, timeout, counted=True, max_answer_bytes=None):
        call = Call(list(rows), timeout)
        self.calls.append(call)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await call.done
        finally:
            self.in_flight -= 1


class FakeServer:
    """A managed model server: starts, runs, dies and stops when the test says; scores as ``answer`` says.

    ``answer(rows)`` returns the class of each row, or raises ``UpstreamError`` to fail the
    call; ``delay`` (seconds) is how long each call takes. Its ``stats`` count every call,
    as ``serving.upstreams.servers.Upstream.score`` does, and a test may add synthetic calls to them.
    """

    managed = True
    kind = "managed"

    def __init__(self, target: Resolved, facts=IRIS_FACTS):
        self.version = target.version
        self.run_id = target.run_id
        self.facts = facts
        self.state = UpstreamState.STARTING
        self.retired = False
        self.inflight = 0
        self.starts = 0
        self.stopped = False
        self.stats = CallStats()
        self.answer = lambda rows: ["setosa"] * len(rows)
        self.delay = 0.0
        self.scored: list[list] = []  # the rows of every call, in order
        self._started: asyncio.Future | None = None
        self._exit: asyncio.Future | None = None

    async def score(self, session, rows, timeout, counted=True, max_answer_bytes=None):
        started, predictions = time.perf_counter(), None
        self.scored.append(list(rows))
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            predictions = [{"prediction": name} for name in self.answer(rows)]
            return predictions
        finally:
            if counted:
                self.stats.observe(time.perf_counter() - started, len(rows), predictions)

    # the test's controls

    @property
    def layout(self):
        return self.facts.layout

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


@dataclass
class Move:
    alias: str
    from_version: str
    to_version: str
    how: str
    reason: str
    by: str


class FakeLookup:
    """The registry: the served alias ``points_to`` a version, to nothing (alias deleted), or it is ``down``.

    Other aliases are in ``aliases``; version tags in ``tags``; alias moves made through
    ``move_alias_if`` in ``moves``. ``writes_fail`` makes the writes (only) fail.
    """

    def __init__(self, version: str | None = None, alias: str = "champion"):
        self.alias = alias
        self.aliases: dict[str, str | None] = {alias: version}
        self.tags: dict[str, dict[str, str]] = {}
        self.moves: list[Move] = []
        self.down = False
        self.writes_fail = False
        self.closed = False

    @property
    def answer(self) -> str | None:
        return self.aliases[self.alias]

    def points_to(self, version: str | None, alias: str | None = None) -> None:
        self.aliases[alias or self.alias] = version
        self.down = False

    async def resolve_async(self, model=None) -> Resolved | None:
        if self.down:
            raise RegistryUnavailable("tracking server unreachable: 127.0.0.1:5000")
        version = self.aliases.get(model.alias if model is not None else self.alias)
        return None if version is None else Resolved(version, f"run-{version}")

    async def version_tags(self, version: str) -> dict[str, str]:
        self._check()
        return dict(self.tags.get(version, {}))

    async def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        self._check(write=True)
        self.tags.setdefault(version, {}).update(tags)

    async def move_alias_if(self, alias, expected, version, *, how, reason, by) -> bool:
        self._check(write=True)
        if self.aliases.get(alias) != expected:
            return False
        self.aliases[alias] = version
        self.moves.append(Move(alias, expected, version, str(how), reason, by))
        return True

    def _check(self, write: bool = False) -> None:
        if self.down or (write and self.writes_fail):
            raise RegistryUnavailable("tracking server unreachable: 127.0.0.1:5000")

    def close(self, wait: bool = False) -> None:
        self.closed = True


async def settle() -> None:
    """Let every task that is ready run until each waits again."""
    for _ in range(20):
        await asyncio.sleep(0)


async def until(condition, timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


def run_router(make_router, body, answer=None, timeout: float = 10.0) -> None:
    """``body(router, servers, lookup)`` on the router ``make_router()`` builds, once version 1's fake
    server (answering with ``answer`` when given) is up; the router is closed after."""

    async def guarded():
        router, servers, lookup = make_router()
        await router.start(None)
        await settle()
        if answer is not None:
            servers.latest("1").answer = answer
        servers.latest("1").come_up()
        await settle()
        try:
            await body(router, servers, lookup)
        finally:
            await router.close()

    asyncio.run(asyncio.wait_for(guarded(), timeout=timeout))
