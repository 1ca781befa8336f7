"""The versions' signatures (``serving.signatures``): each asked of the registry helper once, however many ask at once."""

import asyncio

import pytest

from iris_core.errors import RegistryUnavailable
from serving.signatures import Signatures
from tests.serving.test_open_inference import MLFLOW_SIGNATURE


class SlowLookup:
    """The registry helper's signature call, answering only when the test says; every call counted."""

    def __init__(self):
        self.calls = 0
        self.answer = asyncio.Event()
        self.fail = False

    async def signature_async(self, version):
        self.calls += 1
        await self.answer.wait()
        if self.fail:
            raise RegistryUnavailable("tracking server unreachable")
        return MLFLOW_SIGNATURE


def test_concurrent_requests_for_a_versions_metadata_ask_the_registry_helper_once():
    """Else each queued its own call to the one helper process: a queue between requests and another process."""

    async def body():
        lookup = SlowLookup()
        signatures = Signatures(lookup)
        waiting = [asyncio.ensure_future(signatures.get("3", timeout=5)) for _ in range(200)]
        await asyncio.sleep(0.05)
        assert lookup.calls == 1
        lookup.answer.set()
        found = await asyncio.gather(*waiting)
        assert len({id(signature) for signature in found}) == 1
        assert await signatures.get("3", timeout=5) is found[0] and lookup.calls == 1

    asyncio.run(asyncio.wait_for(body(), timeout=10))


def test_a_failed_lookup_fails_everyone_waiting_for_it_and_the_next_request_asks_again():
    async def body():
        lookup = SlowLookup()
        lookup.fail = True
        signatures = Signatures(lookup)
        waiting = [asyncio.ensure_future(signatures.get("3", timeout=5)) for _ in range(5)]
        await asyncio.sleep(0.01)
        lookup.answer.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(result, RegistryUnavailable) for result in results) and lookup.calls == 1
        lookup.fail = False
        await signatures.get("3", timeout=5)
        assert lookup.calls == 2

    asyncio.run(asyncio.wait_for(body(), timeout=10))


def test_a_client_that_gives_up_does_not_cancel_the_lookup_the_others_wait_for():
    async def body():
        lookup = SlowLookup()
        signatures = Signatures(lookup)
        first = asyncio.ensure_future(signatures.get("3", timeout=5))
        second = asyncio.ensure_future(signatures.get("3", timeout=5))
        await asyncio.sleep(0.01)
        first.cancel()
        lookup.answer.set()
        assert (await second) is not None and lookup.calls == 1
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(asyncio.wait_for(body(), timeout=10))
