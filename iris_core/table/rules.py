"""The value rules a feature's values are judged by, in the words every part of the project uses.

A feature's type says what kind of number it holds (MLflow's column types: ``double``,
``float``, ``long``, ``integer``); its hard rules (``gt``, ``ge``, ``lt``, ``le``) say
which numbers are refused. Every value must be finite whatever the rules: no model scores
NaN or infinity into anything meaningful. The serving proxy, batch scoring, production
rows for retraining and the training data apply these same rules, compiled each into its
own fast path, so that a row refused by one is refused by all.
"""

import math
import re
from dataclasses import dataclass

NUMERIC_TYPES = ("double", "float", "long", "integer")
INTEGER_TYPES = frozenset({"long", "integer"})
RULE_KEYS = ("gt", "ge", "lt", "le")
_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}

NOT_FINITE = "must be finite"
NOT_A_NUMBER_TEXT = "must be a number, got a string"
NOT_AN_INTEGER = "must be an integer"
# Text that counts as a number: no 'nan', 'inf', '0x1p3' or '1_000'. The mantissa is
# written so that no run of digits can be split two ways, which keeps matching linear in
# the length of the text (``\d+\.?\d*`` backtracks quadratically on a long digit run).
NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")


@dataclass(frozen=True)
class Bounds:
    """Hard rules on a feature's values: a value outside them is refused, never scored."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def __post_init__(self):
        for key in RULE_KEYS:
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not _finite(value)):
                raise ValueError(f"rule {key} must be a finite number, got {value!r}")
        if self.gt is not None and self.ge is not None or self.lt is not None and self.le is not None:
            raise ValueError("give at most one lower rule (gt or ge) and one upper rule (lt or le)")
        low, high = self.interval()[0], self.interval()[2]
        if low > high or (low == high and (self.gt is not None or self.lt is not None)):
            raise ValueError("the rules leave no value allowed")

    @property
    def empty(self) -> bool:
        return all(getattr(self, key) is None for key in RULE_KEYS)

    def interval(self) -> tuple[float, bool, float, bool]:
        """``(low, low_inclusive, high, high_inclusive)``: infinite ends are exclusive, so NaN and infinity never pass."""
        low, low_inclusive = (self.ge, True) if self.ge is not None else (self.gt, False)
        high, high_inclusive = (self.le, True) if self.le is not None else (self.lt, False)
        return (
            -math.inf if low is None else float(low),
            low_inclusive,
            math.inf if high is None else float(high),
            high_inclusive,
        )

    def text(self) -> str:
        """The rules as a person reads them: ``> 0 and <= 1e+06``."""
        return " and ".join(
            f"{_SYMBOLS[key]} {getattr(self, key):g}" for key in RULE_KEYS if getattr(self, key) is not None
        )

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in RULE_KEYS if getattr(self, key) is not None}


class Rule:
    """One feature's rules compiled for checking one value at a time (the proxy's and the labels' path)."""

    __slots__ = ("name", "integer", "low", "low_inclusive", "high", "high_inclusive", "bounds")

    def __init__(self, name: str, kind: str, bounds: Bounds):
        self.name = name
        self.integer = kind in INTEGER_TYPES
        self.bounds = bounds
        self.low, self.low_inclusive, self.high, self.high_inclusive = bounds.interval()

    def half_open(self) -> tuple[float, float, bool]:
        """``(low, high, integer)`` such that ``low < value <= high`` holds exactly for the values the rule allows.

        One comparison per end, whatever the rule's ends are: the proxy checks every value of
        every request this way. An infinite end is exclusive, so its largest float stands in
        and infinity fails.
        """
        low, high = self.low, self.high
        if self.low_inclusive:
            low = math.nextafter(low, -math.inf)
        if not self.high_inclusive:
            high = math.nextafter(high, -math.inf)
        return low, high, self.integer

    def passes(self, value: float) -> bool:
        """For a number already known to be an int or a float (not a bool)."""
        low, high = self.low, self.high
        if not ((low <= value) if self.low_inclusive else (low < value)):
            return False
        if not ((value <= high) if self.high_inclusive else (value < high)):
            return False
        return not self.integer or value == int(value)

    def problem(self, value, digits: int = 6) -> str | None:
        """Why ``value`` breaks the rules, showing a number with ``digits`` significant digits; None when it passes."""
        kind = type(value)
        if kind is bool or not (kind is int or kind is float or isinstance(value, (int, float))):
            if isinstance(value, str):
                return NOT_A_NUMBER_TEXT
            names = {bool: "a boolean", type(None): "null", list: "an array", dict: "an object"}
            return f"must be a number, got {names.get(kind, kind.__name__)}"
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range (Python's json reads any)
            rule = f"must be {self.bounds.text()}" if not self.bounds.empty else NOT_FINITE
            return f"{rule}, got an integer beyond 1e308"
        return number_problem(number, self, digits)


def number_problem(value: float, rule: "Rule", digits: int) -> str | None:
    """Why a float breaks ``rule``; None when it passes."""
    if not math.isfinite(value):
        return NOT_FINITE
    low, high = rule.low, rule.high
    inside = ((low <= value) if rule.low_inclusive else (low < value)) and (
        (value <= high) if rule.high_inclusive else (value < high)
    )
    if not inside:
        return f"must be {rule.bounds.text()}, got {value:.{digits}g}"
    if rule.integer and not value.is_integer():
        return f"{NOT_AN_INTEGER}, got {value:.{digits}g}"
    return None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
