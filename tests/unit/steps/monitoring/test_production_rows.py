"""Labeled production rows checked against the contract before retraining: each reason counted, no row repaired."""

from iris_core.table.contract import Feature, TableContract
from iris_core.table.rules import Bounds
from steps.monitoring.live_performance import join
from steps.monitoring.production_data import production_rows

CONTRACT = TableContract(
    (Feature("od280/od315 of diluted wines", "double", Bounds(gt=0)), Feature("count", "long")),
    label="class",
    classes=("a", "b"),
    class_codes=True,
)


def labeled(rows: list[tuple[dict, str]]):
    predictions = [
        {"request_id": f"r{i}", "row": 0, "features": features, "prediction": "a", "confidence": None}
        for i, (features, _) in enumerate(rows)
    ]
    labels = [{"request_id": f"r{i}", "row": 0, "label": label} for i, (_, label) in enumerate(rows)]
    return join(labels, predictions)


def test_rows_without_a_feature_breaking_a_rule_or_naming_no_class_are_left_out_by_reason():
    slashed = "od280/od315 of diluted wines"
    rows = labeled(
        [
            ({slashed: 2.5, "count": 3}, "a"),
            ({slashed: 1.0, "count": 4}, "1"),  # a class index, as the contract allows
            ({"count": 3}, "a"),
            ({slashed: -1.0, "count": 3}, "b"),
            ({slashed: 1.0, "count": 2.5}, "b"),
            ({slashed: 1.0, "count": 2}, "merlot"),
            ({slashed: 1.0, "count": 2, "extra": 9.0}, "b"),
        ]
    )
    production = production_rows(rows, CONTRACT)
    assert production.frame.to_dict(orient="records") == [
        {slashed: 2.5, "count": 3.0, "class": "a"},
        {slashed: 1.0, "count": 4.0, "class": "b"},
        {slashed: 1.0, "count": 2.0, "class": "b"},
    ]
    assert dict(production.rejected) == {
        f"{slashed} is missing": 1,
        f"{slashed} is not > 0": 1,
        "count is not an integer": 1,
        "the label is not a class": 1,
    }
    assert production.labeled == 7 and production.rejected_rows == 4
