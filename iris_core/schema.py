"""The Iris schema and the value rules that the proxy and batch scoring judge rows by.

The model scores four positive measurements in centimetres. It overflows to NaN scores
far below float's limit (1e308 gives NaN), and no flower measures a kilometre, so a value
must be a finite number in (0, MAX_VALUE]. Both the serving proxy and the batch engines
apply exactly these rules, so a row refused by one is refused by the other.
"""

import math
import re

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
LABEL = "species"
CLASSES = ("setosa", "versicolor", "virginica")
# What the pyfunc model returns per row (steps/iris_model.py keeps its own copy: MLflow
# copies that file into the model, so it imports nothing of the project).
OUTPUT_COLUMNS = ("prediction", "prediction_index", "confidence", "confidence_scores")

MAX_VALUE = 1e6
RANGE_RULE = f"must be > 0 and <= {MAX_VALUE:g}"
NOT_FINITE = "must be finite"
NOT_A_NUMBER_TEXT = "must be a number, got a string"
# Text that counts as a number: no 'nan', 'inf', '0x1p3' or '1_000'. The mantissa is
# written so that no run of digits can be split two ways, which keeps matching linear in
# the length of the text (``\d+\.?\d*`` backtracks quadratically on a long digit run).
NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")

# A row every sound model scores as setosa: the proxy's readiness check.
CANARY_ROW = (5.1, 3.5, 1.4, 0.2)
CANARY_CLASS = "setosa"


def number_problem(value: float, digits: int) -> str:
    """Why a number breaks the value rule, showing it with ``digits`` significant digits."""
    if not math.isfinite(value):
        return NOT_FINITE
    return f"{RANGE_RULE}, got {value:.{digits}g}"
