"""The table contract: one declaration, its document, the rules it compiles to, and the contract a model carries."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iris_core.table.contract import (
    METADATA_KEY,
    ContractError,
    Feature,
    Readiness,
    TableContract,
    from_signature,
    load_contract,
)
from iris_core.table.iris import IRIS
from iris_core.table.models import PROJECT_OUTPUTS, answer_class, answer_confidence, model_contract
from iris_core.table.rules import Bounds


def signature(inputs: list[tuple[str, str]], outputs: list[dict] | None = None) -> dict:
    return {
        "inputs": json.dumps([{"type": kind, "name": name, "required": True} for name, kind in inputs]),
        "outputs": json.dumps(
            outputs if outputs is not None else [{"type": "tensor", "tensor-spec": {"dtype": "int64"}}]
        ),
        "params": None,
    }


PROJECT_SIGNATURE_OUTPUTS = [
    {"type": "string", "name": "prediction"},
    {"type": "long", "name": "prediction_index"},
    {"type": "double", "name": "confidence"},
    {"type": "object", "name": "confidence_scores", "properties": {"a": {"type": "double"}, "b": {"type": "double"}}},
]


def test_the_iris_contract_keeps_the_rules_iris_was_always_served_with():
    assert IRIS.feature_names == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert IRIS.label == "species" and IRIS.label_aliases == ("target",)
    assert IRIS.classes == ("setosa", "versicolor", "virginica")
    assert IRIS.readiness == Readiness((5.1, 3.5, 1.4, 0.2), "setosa")
    rule = IRIS.rules[0]
    assert rule.passes(1e-9) and rule.passes(1e6)
    assert not rule.passes(0.0) and not rule.passes(1e6 + 1) and not rule.passes(math.nan) and not rule.passes(math.inf)
    assert rule.problem(0) == "must be > 0 and <= 1e+06, got 0"
    assert rule.problem(math.inf) == "must be finite"
    assert rule.problem("5") == "must be a number, got a string"
    assert rule.problem(True) == "must be a number, got a boolean"


def test_a_contract_reads_back_from_its_document_as_json_and_as_yaml(tmp_path):
    contract = IRIS.with_observed({"sepal_length": (4.3, 7.9)})
    assert TableContract.from_dict(json.loads(contract.to_json())) == contract
    written = tmp_path / "contract.yaml"
    written.write_text(contract.to_yaml())
    loaded = load_contract(written)
    assert loaded.features == contract.features and loaded.origin == "written"


def test_feature_names_may_hold_any_characters():
    names = ("alcohol %", "od280/od315 of diluted wines", "sepal length (cm)", "été")
    contract = TableContract(tuple(Feature(name) for name in names), label="class", classes=("0", "1"))
    assert TableContract.from_dict(json.loads(contract.to_json())).feature_names == names


@pytest.mark.parametrize(
    "document, words",
    [
        ({"features": []}, "'features' must be a non-empty list"),
        ({"features": [{"name": "a"}, {"name": "a"}]}, "named twice"),
        ({"features": [{"name": "a", "type": "string"}]}, "type 'string'"),
        ({"features": [{"name": "a", "rules": {"between": 1}}]}, "rules may be gt, ge, lt, le only"),
        ({"features": [{"name": "a", "rules": {"gt": 5, "lt": 1}}]}, "no value allowed"),
        ({"features": [{"name": "a", "rules": {"gt": "x"}}]}, "must be a finite number"),
        ({"features": [{"name": "a"}], "label": "a"}, "also a feature"),
        ({"features": [{"name": "a"}], "classes": ["x", "x"]}, "class is named twice"),
        ({"features": [{"name": "a", "rules": {"gt": 0}}], "readiness": {"row": {"a": -1}}}, "readiness row breaks"),
        ({"features": [{"name": "a"}], "readiness": {"row": {"b": 1}}}, "every feature once"),
        ({"features": [{"name": "a"}], "colour": 1}, "unknown key 'colour'"),
        ({"features": [{"name": "a"}], "format": 2}, "format 2"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_a_contract_that_cannot_be_used_is_refused_naming_what_is_wrong(document, words):
    with pytest.raises(ContractError, match="the table contract is not valid") as refused:
        TableContract.from_dict(document)
    assert words in str(refused.value)


def test_a_contract_file_that_is_not_yaml_is_one_clear_error(tmp_path):
    path = tmp_path / "contract.yaml"
    path.write_text("features: [unclosed")
    with pytest.raises(ContractError, match="is not YAML or JSON"):
        load_contract(path)
    with pytest.raises(ContractError, match="cannot read the contract"):
        load_contract(tmp_path / "missing.yaml")


def test_integer_features_refuse_fractions_and_any_feature_refuses_what_is_not_finite():
    contract = TableContract((Feature("count", "long"), Feature("x", "double")))
    assert contract.row_problem([3, 0.5]) is None
    assert contract.row_problem([3.5, 0.5]) == "count must be an integer, got 3.5"
    assert contract.row_problem([3, math.nan]) == "x must be finite"
    assert contract.row_problem([3, -1e300]) is None  # no hard rule but finiteness


@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([Bounds(), Bounds(gt=0, le=10), Bounds(ge=-1, lt=1)]),
)
def test_passes_and_problem_never_disagree(value, bounds):
    rule = TableContract((Feature("x", "double", bounds),)).rules[0]
    assert rule.passes(value) == (rule.problem(value) is None)


def test_labels_name_their_class_as_text_or_by_index_where_the_contract_allows():
    assert (
        IRIS.class_of("virginica") == "virginica" and IRIS.class_of(0) == "setosa" and IRIS.class_of(2.0) == "virginica"
    )
    assert IRIS.class_of("iris-rosa") is None and IRIS.class_of(3) is None
    binary = TableContract((Feature("x"),), label="y", classes=("0", "1"))
    assert binary.class_of(1) == "1" and binary.class_of(1.0) == "1" and binary.class_of("2") is None


def test_a_plain_models_signature_implies_its_names_and_types():
    implied = from_signature(signature([("sepal length (cm)", "double"), ("count", "long")]))
    assert implied.layout == (("sepal length (cm)", "double"), ("count", "long"))
    assert implied.origin == "signature" and implied.classes == () and implied.readiness is None


@pytest.mark.parametrize(
    "inputs, words",
    [
        ([("text", "string")], "input 'text' of the model's signature is string"),
        ([("", "double")], "unnamed input"),
    ],
)
def test_a_signature_the_proxy_cannot_check_is_refused_with_the_reason(inputs, words):
    with pytest.raises(ContractError, match=words):
        from_signature(signature(inputs))


def test_a_model_without_a_signature_is_refused_with_one_line_that_says_so():
    with pytest.raises(ContractError, match="the model has no signature"):
        model_contract(None, None)


def test_a_model_carries_the_contract_its_training_logged():
    contract = TableContract((Feature("a", "double", Bounds(ge=0)),), label="y", classes=("a", "b"))
    found = model_contract({METADATA_KEY: contract.as_dict()}, signature([("a", "double")], PROJECT_SIGNATURE_OUTPUTS))
    assert found == contract


def test_a_logged_contract_that_names_other_features_than_the_signature_is_refused():
    contract = TableContract((Feature("a"),))
    with pytest.raises(ContractError, match="other features than its signature"):
        model_contract({METADATA_KEY: contract.as_dict()}, signature([("b", "double")]))


def test_a_project_version_logged_before_contracts_gets_the_iris_contract():
    old = signature([(name, "double") for name in IRIS.feature_names], PROJECT_SIGNATURE_OUTPUTS)
    assert model_contract(None, old) is IRIS
    plain = signature([(name, "double") for name in IRIS.feature_names])
    assert model_contract(None, plain).origin == "signature"


@pytest.mark.parametrize(
    "answer, cls",
    [
        ({"prediction": "setosa", "confidence": 0.9}, "setosa"),
        (2, "2"),
        (2.0, "2"),
        ("virginica", "virginica"),
        ([1], "1"),
        ({"other": 1}, None),
        (None, None),
        (math.nan, None),
    ],
)
def test_the_class_of_an_answer_reads_records_and_bare_values_alike(answer, cls):
    assert answer_class(answer) == cls


def test_only_records_with_a_confidence_give_one():
    assert answer_confidence({"prediction": "a", "confidence": 0.75}) == 0.75
    assert answer_confidence(1) is None and answer_confidence({"prediction": "a"}) is None
    assert PROJECT_OUTPUTS == ("prediction", "prediction_index", "confidence", "confidence_scores")


def test_outside_the_iris_contract_no_code_names_an_iris_feature():
    """Every part reads a version's contract; Iris is the worked example, not a schema written into the code."""
    from tests.helpers.tracking import REPO

    names = IRIS.feature_names
    found = []
    for package in ("iris_core", "steps", "serving", "registry_tools", "bench", "deploy"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "iris_core" / "table" / "iris.py":
                continue
            text = path.read_text()
            found += [f"{path.relative_to(REPO)}: {name}" for name in names if name in text]
    assert found == []
