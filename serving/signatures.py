"""The MLflow signature of each model version served, asked of the registry once per version.

The Open Inference Protocol's metadata and responses are built from it (``serving.open_inference``).
A registered version's model never changes, so an answer is kept for the life of the proxy.
The start-up version's signature is read before the proxy starts (``serving.cli``); a
version the alias moves to later is asked of the registry helper the first time its
metadata is wanted: once, however many requests want it at the same time (they wait for
the one call, instead of each queueing its own for the one helper process). Without a
registry (``--upstream`` and no ``--model-uri``) the project's own schema stands in, the
same tensors by construction.
"""

import asyncio
import logging

from iris_core.errors import RegistryUnavailable
from serving.open_inference import DEFAULT_SIGNATURE, Signature

_logger = logging.getLogger(__name__)


class Signatures:
    def __init__(self, lookup=None, known: dict[str, dict | None] | None = None):
        self._lookup = lookup  # a serving.registry.RegistryLookup, or None
        self._known = {version: Signature.from_mlflow(value) for version, value in (known or {}).items()}
        self._asking: dict[str, asyncio.Future] = {}  # version -> the one registry call under way for it

    def known(self, version: str) -> Signature:
        """What is known now, without asking: the version's signature, else the project's schema."""
        return self._known.get(version, DEFAULT_SIGNATURE)

    async def get(self, version: str, timeout: float) -> Signature:
        """The version's signature, asking the registry the first time; RegistryUnavailable when it cannot."""
        if version in self._known:
            return self._known[version]
        if self._lookup is None:
            return DEFAULT_SIGNATURE
        asking = self._asking.get(version)
        if asking is None:
            asking = self._asking[version] = asyncio.ensure_future(self._ask(version, timeout))
            asking.add_done_callback(lambda task: self._asked(version, task))
        return await asyncio.shield(asking)  # a client that leaves does not cancel it for the others

    def _asked(self, version: str, task: asyncio.Future) -> None:
        self._asking.pop(version, None)
        if not task.cancelled():
            task.exception()  # retrieved, so that a failure whose clients all left is not logged as lost

    async def _ask(self, version: str, timeout: float) -> Signature:
        try:
            found = Signature.from_mlflow(await asyncio.wait_for(self._lookup.signature_async(version), timeout))
        except (RegistryUnavailable, TimeoutError) as exc:
            _logger.warning("cannot read the signature of version %s: %s", version, str(exc) or "timed out")
            raise RegistryUnavailable(f"the signature of version {version} cannot be read") from None
        self._known[version] = found
        return found
