"""A table's contract: one declaration of what a model version reads and answers, carried with the version.

The contract names the features as written (any characters), their types and hard value
rules (``iris_core.table.rules``: what is refused), the label column and its classes, and a
readiness row with the answer it must get. It may also keep the observed range of each
feature in the training data: soft bounds that monitoring reports on and serving does not
refuse. Training logs it with each model version, in the MLflow model's metadata under
``METADATA_KEY``, beside MLflow's signature, so that any process finds version N's contract
from the registry alone (``model_contract``); a model logged without one (any MLflow
classifier with a signature) gets the contract its signature implies: its names and types,
finite numbers.

A contract is a value: built once (curated, as ``iris_core.table.iris``; inferred from a
table by the pipeline; written by a person and read with ``load_contract``; or implied by a
signature), then compiled by each part into its own fast path. Its document form
(``as_dict``/``from_dict``, JSON or YAML) is what a person writes and what the registry keeps.
"""

import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from iris_core.errors import IrisError
from iris_core.table.rules import INTEGER_TYPES, NUMERIC_TYPES, RULE_KEYS, Bounds, Rule

FORMAT = 1
METADATA_KEY = "table_contract"  # where a logged model keeps its contract, in MLflow's model metadata
MAX_FEATURES = 4096
MAX_CLASSES = 255  # class indexes fit a byte wherever answers are remembered
MAX_NAME = 255

CURATED, INFERRED, WRITTEN, SIGNATURE = "curated", "inferred", "written", "signature"
ORIGINS = (CURATED, INFERRED, WRITTEN, SIGNATURE)


class ContractError(IrisError):
    """A contract that cannot be used as written; the message names what is wrong."""


@dataclass(frozen=True)
class Feature:
    """One input column: its name as written, its MLflow type, the values refused, and the range seen in training."""

    name: str
    type: str = "double"
    rules: Bounds = field(default_factory=Bounds)
    observed: tuple[float, float] | None = None  # soft bounds: (min, max) of the training data

    @property
    def integer(self) -> bool:
        return self.type in INTEGER_TYPES


@dataclass(frozen=True)
class Readiness:
    """A row (values in feature order) a sound version scores, and the class it must answer (None: any answer)."""

    row: tuple[float, ...]
    answer: str | None = None


@dataclass(frozen=True)
class TableContract:
    features: tuple[Feature, ...]
    label: str | None = None
    classes: tuple[str, ...] = ()  # as text; empty when unknown (a model logged without a contract)
    label_aliases: tuple[str, ...] = ()  # other names the label column may have in a table
    class_codes: bool = False  # labels may also be written as class indexes 0..n-1
    readiness: Readiness | None = None
    name: str | None = None  # what the table is, for people (e.g. "iris")
    origin: str = WRITTEN

    def __post_init__(self):
        problem = _problem(self)
        if problem:
            raise ContractError(f"the table contract is not valid: {problem}")

    # -- what the parts read ------------------------------------------------------------------

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @cached_property
    def layout(self) -> tuple[tuple[str, str], ...]:
        """Names and types in order: two versions with the same layout read the same rows."""
        return tuple((feature.name, feature.type) for feature in self.features)

    @cached_property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(Rule(feature.name, feature.type, feature.rules) for feature in self.features)

    @property
    def label_columns(self) -> tuple[str, ...]:
        return (self.label, *self.label_aliases) if self.label else ()

    def class_of(self, value) -> str | None:
        """The class a label value names (its text, or with ``class_codes`` its index); None when it names none."""
        text = label_text(value)
        if not self.classes:
            return text if text else None
        if text in self.classes:
            return text
        if self.class_codes and text.isdigit() and int(text) < len(self.classes):
            return self.classes[int(text)]
        return None

    def row_problem(self, values) -> str | None:
        """Why a row (values in feature order) breaks the rules, naming the first bad feature; None when it passes."""
        for rule, value in zip(self.rules, values):
            problem = rule.problem(value)
            if problem:
                return f"{rule.name} {problem}"
        return None

    # -- variants ------------------------------------------------------------------------------

    def with_observed(self, ranges: dict[str, tuple[float, float]]) -> "TableContract":
        """The contract with the training data's range of each feature as its soft bounds."""
        features = tuple(
            replace(
                f, observed=(float(ranges[f.name][0]), float(ranges[f.name][1])) if f.name in ranges else f.observed
            )
            for f in self.features
        )
        return replace(self, features=features)

    def with_readiness(self, readiness: Readiness) -> "TableContract":
        return replace(self, readiness=readiness)

    # -- the document --------------------------------------------------------------------------

    def as_dict(self) -> dict:
        features = []
        for feature in self.features:
            entry: dict = {"name": feature.name, "type": feature.type}
            if not feature.rules.empty:
                entry["rules"] = feature.rules.as_dict()
            if feature.observed is not None:
                entry["observed"] = {"min": feature.observed[0], "max": feature.observed[1]}
            features.append(entry)
        document: dict = {"format": FORMAT}
        if self.name:
            document["name"] = self.name
        document["origin"] = self.origin
        document["features"] = features
        if self.label:
            document["label"] = self.label
        if self.label_aliases:
            document["label_aliases"] = list(self.label_aliases)
        if self.classes:
            document["classes"] = list(self.classes)
        if self.class_codes:
            document["class_codes"] = True
        if self.readiness is not None:
            document["readiness"] = {
                "row": dict(zip(self.feature_names, self.readiness.row)),
                **({"answer": self.readiness.answer} if self.readiness.answer is not None else {}),
            }
        return document

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, allow_nan=False)

    def to_yaml(self) -> str:
        """The document as a person reads and edits it."""
        import yaml

        return yaml.safe_dump(self.as_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, document, origin: str | None = None) -> "TableContract":
        """A contract from its document; ContractError names the first thing wrong with it."""
        try:
            return _from_dict(document, origin)
        except ContractError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ContractError(f"the table contract is not valid: {_reason(exc)}") from None


def label_text(value) -> str:
    """A label as text: ``1.0`` read from a CSV is the class ``1``, blanks around names do not count."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a numpy scalar
        return label_text(value.item())
    return str(value).strip()


def load_contract(path: str | Path) -> TableContract:
    """A contract a person wrote down (YAML or JSON), to pin and tighten what training infers."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"cannot read the contract {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ContractError(f"the contract {path} is not YAML or JSON") from None
    return TableContract.from_dict(document, origin=WRITTEN)


def from_signature(signature: dict) -> TableContract:
    """The contract an MLflow signature (``ModelSignature.to_dict()``) implies: its input names and types, finite numbers.

    The proxy checks requests by names and numbers, so inputs must be named numeric columns;
    any other signature is refused with the reason. The classes are those of a class-scores
    output when the model declares one (an object output with a property per class).
    """
    inputs = _specs(signature, "inputs")
    features = []
    for spec in inputs:
        name, kind = spec.get("name"), spec.get("type")
        if not isinstance(name, str) or not name:
            raise ContractError("the model's signature has an unnamed input; the proxy serves models of named columns")
        if kind not in NUMERIC_TYPES:
            shown = kind if isinstance(kind, str) else "a tensor"
            raise ContractError(
                f"input {_short(name)!r} of the model's signature is {shown}; the proxy serves models whose inputs are "
                f"numeric columns ({', '.join(NUMERIC_TYPES)})"
            )
        features.append(Feature(name, kind))
    classes: tuple[str, ...] = ()
    for spec in _specs(signature, "outputs", required=False):
        if spec.get("type") == "object" and isinstance(spec.get("properties"), dict) and spec["properties"]:
            classes = tuple(str(name) for name in spec["properties"])
    return TableContract(tuple(features), classes=classes, origin=SIGNATURE)


def _specs(signature: dict, key: str, required: bool = True) -> list[dict]:
    raw = (signature or {}).get(key)
    if raw is None:
        if required:
            raise ContractError("the model has no signature; log it with one (mlflow.models.infer_signature)")
        return []
    try:
        specs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise ContractError(f"the model's signature {key} are not JSON") from None
    if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
        raise ContractError(f"the model's signature {key} are not a list of columns")
    if required and not specs:
        raise ContractError(f"the model's signature has no {key}")
    return specs


# -- checking a document and a value --------------------------------------------------------------


def _from_dict(document, origin: str | None) -> TableContract:
    if not isinstance(document, dict):
        raise ContractError("the table contract is not valid: it must be a mapping with 'features'")
    unknown = set(document) - {
        "format",
        "name",
        "origin",
        "features",
        "label",
        "label_aliases",
        "classes",
        "class_codes",
        "readiness",
    }
    if unknown:
        raise ContractError(f"the table contract is not valid: unknown key {_short(sorted(map(str, unknown))[0])!r}")
    if document.get("format", FORMAT) != FORMAT:
        raise ContractError(f"the table contract is not valid: format {document.get('format')!r} (this reads {FORMAT})")
    raw_features = document.get("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise ContractError("the table contract is not valid: 'features' must be a non-empty list")
    features = tuple(_feature(entry, number) for number, entry in enumerate(raw_features))
    names = [feature.name for feature in features]
    readiness = None
    if document.get("readiness") is not None:
        raw = document["readiness"]
        if not isinstance(raw, dict) or not isinstance(raw.get("row"), dict):
            raise ContractError("the table contract is not valid: readiness must have a 'row' of feature values")
        row = raw["row"]
        if set(row) != set(names):
            raise ContractError("the table contract is not valid: the readiness row must give every feature once")
        answer = raw.get("answer")
        readiness = Readiness(tuple(row[name] for name in names), None if answer is None else label_text(answer))
    classes = document.get("classes") or []
    if not isinstance(classes, list):
        raise ContractError("the table contract is not valid: 'classes' must be a list")
    aliases = document.get("label_aliases") or []
    if not isinstance(aliases, list):
        raise ContractError("the table contract is not valid: 'label_aliases' must be a list")
    return TableContract(
        features=features,
        label=document.get("label"),
        classes=tuple(label_text(value) for value in classes),
        label_aliases=tuple(aliases),
        class_codes=bool(document.get("class_codes", False)),
        readiness=readiness,
        name=document.get("name"),
        origin=origin or document.get("origin", WRITTEN),
    )


def _feature(entry, number: int) -> Feature:
    if not isinstance(entry, dict) or "name" not in entry:
        raise ContractError(f"the table contract is not valid: features[{number}] must be a mapping with a 'name'")
    unknown = set(entry) - {"name", "type", "rules", "observed"}
    if unknown:
        raise ContractError(
            f"the table contract is not valid: features[{number}] has unknown key {_short(sorted(map(str, unknown))[0])!r}"
        )
    rules = entry.get("rules") or {}
    if not isinstance(rules, dict) or set(rules) - set(RULE_KEYS):
        raise ContractError(
            f"the table contract is not valid: features[{number}] rules may be {', '.join(RULE_KEYS)} only"
        )
    try:
        bounds = Bounds(**rules)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"the table contract is not valid: features[{number}]: {exc}") from None
    observed = entry.get("observed")
    if observed is not None:
        if not isinstance(observed, dict) or set(observed) != {"min", "max"}:
            raise ContractError(f"the table contract is not valid: features[{number}] observed needs min and max")
        observed = (observed["min"], observed["max"])
    return Feature(entry["name"], entry.get("type", "double"), bounds, observed)


def _problem(contract: TableContract) -> str | None:
    if contract.origin not in ORIGINS:
        return f"origin must be one of {', '.join(ORIGINS)}"
    if not isinstance(contract.features, tuple) or not contract.features:
        return "it needs at least one feature"
    if len(contract.features) > MAX_FEATURES:
        return f"{len(contract.features)} features, more than {MAX_FEATURES}"
    names = set()
    for feature in contract.features:
        if not isinstance(feature.name, str) or not feature.name or len(feature.name) > MAX_NAME:
            return f"a feature name must be text of 1 to {MAX_NAME} characters"
        if feature.name in names:
            return f"feature {_short(feature.name)!r} is named twice"
        names.add(feature.name)
        if feature.type not in NUMERIC_TYPES:
            return f"feature {_short(feature.name)!r} has type {feature.type!r}, not one of {', '.join(NUMERIC_TYPES)}"
        if feature.observed is not None and not (
            len(feature.observed) == 2
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in feature.observed
            )
            and feature.observed[0] <= feature.observed[1]
        ):
            return f"feature {_short(feature.name)!r}: observed must be finite numbers, min <= max"
    for column in contract.label_columns:
        if not isinstance(column, str) or not column:
            return "the label must name a column"
        if column in names:
            return f"the label column {_short(column)!r} is also a feature"
    if len(set(contract.classes)) != len(contract.classes):
        return "a class is named twice"
    if len(contract.classes) > MAX_CLASSES:
        return f"{len(contract.classes)} classes, more than {MAX_CLASSES}"
    if contract.class_codes and not contract.classes:
        return "class_codes needs the classes"
    if contract.readiness is not None:
        row = contract.readiness.row
        if len(row) != len(contract.features):
            return "the readiness row must give every feature"
        problem = contract.row_problem(row)
        if problem:
            return f"the readiness row breaks a rule: {problem}"
        answer = contract.readiness.answer
        if answer is not None and contract.classes and answer not in contract.classes:
            return f"the readiness answer {_short(answer)!r} is not a class"
    return None


def _short(text: str, limit: int = 40) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
