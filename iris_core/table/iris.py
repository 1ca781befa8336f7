"""The Iris table's curated contract: the project's worked example, and the only place its features are named.

The model scores four positive measurements in centimetres. It overflows to NaN scores
far below float's limit (1e308 gives NaN), and no flower measures a kilometre, so a value
must be a finite number in (0, 1e6]. The label is ``species`` (a CSV may call it
``target``), as names or as the indexes 0, 1, 2. A sound model scores the readiness row,
a typical setosa, as setosa.
"""

from iris_core.table.contract import CURATED, Feature, Readiness, TableContract
from iris_core.table.rules import Bounds

MAX_VALUE = 1e6
_MEASUREMENT = Bounds(gt=0, le=MAX_VALUE)

IRIS = TableContract(
    name="iris",
    features=tuple(
        Feature(name, "double", _MEASUREMENT) for name in ("sepal_length", "sepal_width", "petal_length", "petal_width")
    ),
    label="species",
    label_aliases=("target",),
    classes=("setosa", "versicolor", "virginica"),
    class_codes=True,
    readiness=Readiness((5.1, 3.5, 1.4, 0.2), "setosa"),
    origin=CURATED,
)
