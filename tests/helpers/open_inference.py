"""The pipeline's Iris model as the Open Inference Protocol sees it: its signature, two answers, and rows as V2 input tensors."""

import json

from iris_core.table.iris import IRIS
from serving.protocols.open_inference import Signature
from tests.helpers.iris import CLASSES, FEATURES

ROWS = [[5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]]


# What MLflow's ModelSignature.to_dict() gives for the pipeline's model (steps/train.py).
MLFLOW_SIGNATURE = {
    "inputs": json.dumps([{"type": "double", "name": name, "required": True} for name in FEATURES]),
    "outputs": json.dumps(
        [
            {"type": "string", "name": "prediction", "required": True},
            {"type": "long", "name": "prediction_index", "required": True},
            {"type": "double", "name": "confidence", "required": True},
            {
                "type": "object",
                "name": "confidence_scores",
                "required": True,
                "properties": {name: {"type": "double", "required": True} for name in CLASSES},
            },
        ]
    ),
    "params": None,
}


SIGNATURE = Signature.of(IRIS, MLFLOW_SIGNATURE)


PREDICTIONS = [
    {
        "prediction": "setosa",
        "prediction_index": 0,
        "confidence": 0.9,
        "confidence_scores": {"setosa": 0.9, "versicolor": 0.07, "virginica": 0.03},
    },
    {
        "prediction": "virginica",
        "prediction_index": 2,
        "confidence": 0.8,
        "confidence_scores": {"setosa": 0.01, "versicolor": 0.19, "virginica": 0.8},
    },
]


def feature_inputs(rows=ROWS, datatype="FP64", shape_of=lambda n: [n, 1]) -> list[dict]:
    return [
        {"name": name, "shape": shape_of(len(rows)), "datatype": datatype, "data": [row[i] for row in rows]}
        for i, name in enumerate(FEATURES)
    ]
