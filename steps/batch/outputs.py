"""The model's outputs as Arrow columns, the same whichever way the model handed them over.

A model of this project (``steps/training/iris_model.py``) answers four columns per row
(``PROJECT_OUTPUTS``) and offers ``predict_columns``: its output as arrays, which become
Arrow columns without a Python object per row. Versions registered before it existed give
``predict``'s DataFrame with a dict per row; it is converted as it always was. Both ways
write the same bytes: CSV gets ``confidence_scores`` as the JSON text orjson writes for the
dict, Parquet a struct with a field per class of the version. Any other model answers what
MLflow answers for it, which goes to one ``prediction`` column: the class of each row's
answer, as text (``iris_core.table.models.answer_class``).
"""

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from iris_core.table.models import PROJECT_OUTPUTS

# What the model hands over: predict's DataFrame, or predict_columns' dict of arrays; any other model's answer.
Predict = Callable[[pd.DataFrame], pd.DataFrame | dict]
PLAIN_OUTPUTS = ("prediction",)  # what a model this project did not train gets in the output


def output_columns(project: bool) -> tuple[str, ...]:
    return PROJECT_OUTPUTS if project else PLAIN_OUTPUTS


def model_predict(model) -> Predict:
    """The fastest way to score with a loaded pyfunc model that gives ``predict``'s exact output."""
    try:
        python_model = model.unwrap_python_model()
    except Exception:  # a flavour other than python_function has no python model to unwrap
        return model.predict
    return getattr(python_model, "predict_columns", model.predict)


def scores_struct(classes: Sequence[str]) -> pa.DataType:
    return pa.struct([(name, pa.float64()) for name in classes])


def output_arrays(
    result: pd.DataFrame | dict, scores_as_json: bool, classes: Sequence[str]
) -> tuple[list[pa.Array], Counter]:
    """(prediction, prediction_index, confidence, confidence_scores) and the count of each predicted class."""
    if isinstance(result, dict):
        return _from_columns(result, scores_as_json, classes)
    return _from_frame(result, scores_as_json, classes)


def plain_arrays(result) -> tuple[list[pa.Array], Counter]:
    """Any other model's answers: one ``prediction`` column of classes as text, and the count of each."""
    from steps.registry.versions import answer_classes

    predictions = pa.array(answer_classes(result), pa.string())
    counts = pc.value_counts(predictions.drop_null()).to_pylist()
    return [predictions], Counter({item["values"]: item["counts"] for item in counts})


def _from_frame(result: pd.DataFrame, scores_as_json: bool, classes: Sequence[str]) -> tuple[list[pa.Array], Counter]:
    scores = result["confidence_scores"].tolist()
    if scores_as_json:
        scores_array = pa.array([orjson.dumps(s).decode() for s in scores], pa.string())
    else:
        scores_array = pa.array(scores, scores_struct(classes))
    predictions = pa.array(result["prediction"].astype(object).tolist(), pa.string())
    arrays = [
        predictions,
        pa.array(result["prediction_index"].to_numpy(), pa.int64()),
        pa.array(result["confidence"].to_numpy(), pa.float64()),
        scores_array,
    ]
    counts = pc.value_counts(predictions).to_pylist()
    return arrays, Counter({item["values"]: item["counts"] for item in counts})


def _from_columns(result: dict, scores_as_json: bool, struct_classes: Sequence[str]) -> tuple[list[pa.Array], Counter]:
    classes, probabilities = result["classes"], result["probabilities"]
    best = np.asarray(result["prediction_index"], dtype="int64")
    columns = {name: probabilities[:, i] for i, name in enumerate(classes)}
    if scores_as_json:
        scores = json_objects(columns)
    else:
        fields = [columns[name] if name in columns else pa.nulls(len(best), pa.float64()) for name in struct_classes]
        scores = pa.StructArray.from_arrays(fields, fields=list(scores_struct(struct_classes)))
    arrays = [
        pc.take(pa.array(classes, pa.string()), pa.array(best)),
        pa.array(best, pa.int64()),
        pa.array(result["confidence"], pa.float64()),
        scores,
    ]
    counts = np.bincount(best, minlength=len(classes))
    return arrays, Counter({name: int(count) for name, count in zip(classes, counts) if count})


def json_objects(columns: dict[str, np.ndarray]) -> pa.Array:
    """``{"name": value, ...}`` per row, byte for byte what ``orjson.dumps`` writes for the row's dict."""
    parts = []
    for position, (name, values) in enumerate(columns.items()):
        parts += ["{" if position == 0 else ",", orjson.dumps(name).decode() + ":", json_numbers(values)]
    return pc.binary_join_element_wise(*parts, "}", "")


def json_numbers(values: np.ndarray) -> pa.Array:
    """float64 values as text, each exactly as ``orjson.dumps`` writes it: orjson writes the whole
    column in one call, and Arrow cuts that text at the commas."""
    text = orjson.dumps(np.ascontiguousarray(values, dtype="float64"), option=orjson.OPT_SERIALIZE_NUMPY)
    if len(values) == 0:
        return pa.array([], pa.string())
    return pc.split_pattern(pa.array([text[1:-1]], pa.binary()), b",").flatten().cast(pa.string())
