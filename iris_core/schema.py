"""The Iris contract's names as constants, for the code that has not moved to per-version contracts yet.

Everything here is read from ``iris_core.table.iris``; new code reads the contract of the
version it deals with instead (``iris_core.table``).
"""

from iris_core.table.iris import IRIS, MAX_VALUE
from iris_core.table.models import PROJECT_OUTPUTS
from iris_core.table.rules import NOT_A_NUMBER_TEXT, NOT_FINITE, NUMBER

__all__ = ["MAX_VALUE", "NOT_A_NUMBER_TEXT", "NOT_FINITE", "NUMBER"]

FEATURES = IRIS.feature_names
LABEL = IRIS.label
CLASSES = IRIS.classes
OUTPUT_COLUMNS = PROJECT_OUTPUTS
RANGE_RULE = f"must be {IRIS.features[0].rules.text()}"
CANARY_ROW = IRIS.readiness.row
CANARY_CLASS = IRIS.readiness.answer


def number_problem(value: float, digits: int) -> str:
    """Why a number breaks the Iris value rule, showing it with ``digits`` significant digits."""
    return IRIS.rules[0].problem(value, digits) or ""
