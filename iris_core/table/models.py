"""What a logged model says about itself: its table contract, and the class and confidence in each of its answers.

Every part that meets a model version (the serving proxy, the gate, batch scoring,
monitoring) reads its contract through ``model_contract``, from the two things MLflow keeps
in the model's ``MLmodel`` file: the metadata this project's training writes the contract
into, and the signature every logged model should have. A model this project did not train
answers what MLflow answers for it (a class per row, or a record per row); this project's
own model answers a record per row with ``PROJECT_OUTPUTS``. ``answer_class`` reads the
class out of either, so that live accuracy, shadow agreement and the canary's class mix
treat every model alike.
"""

import math

from iris_core.table.contract import METADATA_KEY, ContractError, TableContract, from_signature, label_text
from iris_core.table.iris import IRIS

# What this project's pyfunc model returns per row (steps/training/iris_model.py keeps its own copy:
# MLflow copies that file into the model, so it imports nothing of the project).
PROJECT_OUTPUTS = ("prediction", "prediction_index", "confidence", "confidence_scores")


def output_names(signature: dict | None) -> tuple[str, ...]:
    """The names of a signature's output columns (empty for a tensor or an unnamed output)."""
    import json

    raw = (signature or {}).get("outputs")
    try:
        specs = json.loads(raw) if isinstance(raw, str) else (raw or [])
    except ValueError:
        return ()
    return tuple(spec.get("name") for spec in specs if isinstance(spec, dict) and isinstance(spec.get("name"), str))


def has_project_outputs(signature: dict | None) -> bool:
    """Whether the model answers this project's records (class, index, confidence, scores) per row."""
    return output_names(signature) == PROJECT_OUTPUTS


def model_contract(metadata: dict | None, signature: dict | None) -> TableContract:
    """A version's contract: the one its training logged, else the one its signature implies.

    A version of this project's model logged before contracts were (the four Iris features
    in, the project's records out) gets the curated Iris contract, as it was served then.
    """
    document = (metadata or {}).get(METADATA_KEY)
    if document is not None:
        contract = TableContract.from_dict(document)
        if signature is not None:
            names = tuple(spec[0] for spec in _input_names(signature))
            if names and names != contract.feature_names:
                raise ContractError("the contract logged with the model names other features than its signature")
        return contract
    implied = from_signature(signature)
    if has_project_outputs(signature) and implied.layout == IRIS.layout:
        return IRIS
    return implied


def _input_names(signature: dict) -> list[tuple[str, str]]:
    import json

    raw = signature.get("inputs")
    try:
        specs = json.loads(raw) if isinstance(raw, str) else (raw or [])
    except ValueError:
        return []
    return [(spec.get("name"), spec.get("type")) for spec in specs if isinstance(spec, dict)]


def answer_class(item) -> str | None:
    """The class one answer gives: a record's ``prediction``, or the answer itself (``[0]`` of a one-element list).

    Integral floats are the same class as the integer (``1.0`` is ``1``); None when the
    answer holds no class (a record without ``prediction``, a missing value).
    """
    if isinstance(item, dict):
        item = item.get("prediction")
    while isinstance(item, list) and len(item) == 1:
        item = item[0]
    if item is None or isinstance(item, (dict, list)):
        return None
    if isinstance(item, float) and not math.isfinite(item):
        return None
    return label_text(item)


def answer_confidence(item) -> float | None:
    """A record's ``confidence`` when the model gives one."""
    if isinstance(item, dict):
        value = item.get("confidence")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None
