"""What the proxy knows of one model version before it serves it: its contract, its outputs, its readiness check.

Everything comes from the registry alone (``serving.registry.base`` reads the version's
``MLmodel`` file and input example, wherever the store is): the table contract its
training logged, or the one its signature implies (``iris_core.table.models``); the
outputs its signature declares, for the Open Inference Protocol; and how to tell that a
model server of it is ready: the contract's readiness row and answer, else the first row
of the input example logged with the model (any answer will do), else none (its ``/ping``
only). A version whose contract cannot be used (no signature, inputs that are not named
numeric columns) is refused with the reason: at start, the proxy does not start; on an
alias move, the rollout fails and the live version serves on.

Facts are built once per version and shared by everything that meets the version: its
model servers, the request checks (``reader``), the answers and the labels (``classes``).
"""

import asyncio
from dataclasses import dataclass, field

from iris_core.errors import RegistryUnavailable
from iris_core.table.contract import Readiness, TableContract
from iris_core.table.models import answer_class, has_project_outputs, model_contract
from serving.protocols.open_inference import Signature
from serving.protocols.rows import RowReader

UNKNOWN_CLASS = 255  # a class outside the index: never equal to a label
MAX_INDEXED_CLASSES = 254


class ClassIndex:
    """Class names as small integers, for remembering the class of every answered row in a byte.

    A version whose contract lists its classes has a fixed index; one that does not (a
    model logged without a contract) learns classes as its answers and labels name them,
    up to ``MAX_INDEXED_CLASSES``; any further class is ``UNKNOWN_CLASS``.
    """

    def __init__(self, classes: tuple[str, ...]):
        self.fixed = bool(classes)
        self._index = {name: number for number, name in enumerate(classes)}

    def index(self, name: str | None) -> int:
        if name is None:
            return UNKNOWN_CLASS
        number = self._index.get(name)
        if number is not None:
            return number
        if self.fixed or len(self._index) >= MAX_INDEXED_CLASSES:
            return UNKNOWN_CLASS
        number = self._index[name] = len(self._index)
        return number

    def of_answers(self, predictions: list) -> bytes:
        """The class of each answered row, one byte per row."""
        index = self.index
        return bytes(index(answer_class(item)) for item in predictions)


@dataclass(frozen=True, eq=False)
class ModelFacts:
    contract: TableContract
    signature: Signature  # the Open Inference Protocol's view: the contract's inputs, the signature's outputs
    project_outputs: bool  # answers this project's records (class, index, confidence, scores) per row
    readiness: Readiness | None
    reader: RowReader = field(repr=False)
    classes: ClassIndex = field(repr=False)

    @classmethod
    def of(cls, document: dict) -> "ModelFacts":
        """From what the registry holds: ``{"signature", "metadata", "example"}`` (``serving.registry.base``).

        ``ContractError`` says why a version cannot be served.
        """
        signature = document.get("signature")
        contract = model_contract(document.get("metadata"), signature)
        readiness = contract.readiness or _example_row(contract, document.get("example"))
        return cls(
            contract,
            Signature.of(contract, signature),
            has_project_outputs(signature),
            readiness,
            RowReader(contract),
            ClassIndex(contract.classes),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return self.contract.feature_names

    @property
    def layout(self) -> tuple:
        return self.contract.layout


def _example_row(contract: TableContract, example) -> Readiness | None:
    """The first row of a logged input example (pandas' split orient), when it gives every feature a usable value."""
    if not isinstance(example, dict):
        return None
    columns, data = example.get("columns"), example.get("data")
    if not isinstance(columns, list) or not isinstance(data, list) or not data or not isinstance(data[0], list):
        return None
    values = dict(zip(columns, data[0]))
    if any(name not in values for name in contract.feature_names):
        return None
    row = tuple(values[name] for name in contract.feature_names)
    errors: list[str] = []
    RowReader(contract).checked_row(list(row), 0, errors)
    return None if errors else Readiness(row)


def standing_in() -> ModelFacts:
    """The facts of this project's Iris model, for a proxy that asks no registry (``--upstream`` without
    ``--model-uri``): requests are checked against the Iris contract, as they always were then."""
    from iris_core.table.iris import IRIS
    from iris_core.table.models import PROJECT_OUTPUTS

    outputs = tuple(zip(PROJECT_OUTPUTS, ("BYTES", "INT64", "FP64", "FP64")))
    signature = Signature(IRIS.layout, outputs, IRIS.classes, PROJECT_OUTPUTS[-1])
    return ModelFacts(IRIS, signature, True, IRIS.readiness, RowReader(IRIS), ClassIndex(IRIS.classes))


class VersionFacts:
    """The facts of every version this proxy has met, asked of the registry once per version.

    A registered version's model never changes, so an answer is kept for the life of the
    proxy. The start-up version's facts are read before the proxy starts (``serving.cli``);
    a version the alias moves to is asked before its model server starts.
    """

    def __init__(self, lookup=None, known: dict[str, ModelFacts] | None = None, default: ModelFacts | None = None):
        self._lookup = lookup  # a serving.registry.base.RegistryLookup, or None
        self._known = dict(known or {})
        self._default = default  # for a version no registry can be asked about

    def known(self, version: str | None) -> ModelFacts | None:
        """What is known now, without asking."""
        return self._known.get(version, self._default)

    async def get(self, version: str, timeout: float) -> ModelFacts:
        """The version's facts, asking the registry the first time.

        ``RegistryUnavailable`` when it cannot be asked, ``ContractError`` when the version cannot be served.
        """
        found = self.known(version)
        if found is not None:
            return found
        if self._lookup is None:
            raise RegistryUnavailable(f"no registry to ask about version {version}")
        try:
            document = await asyncio.wait_for(self._lookup.document_async(version), timeout)
        except TimeoutError:
            raise RegistryUnavailable(f"the registry did not say what version {version} is in time") from None
        facts = self._known[version] = ModelFacts.of(document)
        return facts
