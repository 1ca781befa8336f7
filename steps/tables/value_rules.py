"""A contract's hard rules over whole columns: numpy masks of the values a ``Rule`` lets through.

The training data, batch scoring and production rows for retraining judge millions of
values, so they compile each feature's ``iris_core.table.rules.Rule`` into array
comparisons here instead of calling ``Rule.problem`` per value; the words of a refusal
still come from the rule itself, for the few values that fail.
"""

import numpy as np

from iris_core.table.rules import Rule


def passes(rule: Rule, values: np.ndarray) -> np.ndarray:
    """Per value, whether it is finite and within the rule (an integer, for an integer type); False for NaN."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values)
        if rule.low != -np.inf:
            ok &= (values >= rule.low) if rule.low_inclusive else (values > rule.low)
        if rule.high != np.inf:
            ok &= (values <= rule.high) if rule.high_inclusive else (values < rule.high)
        if rule.integer:
            ok &= values == np.floor(values)
    return ok


def finite_but_refused(rule: Rule, values: np.ndarray) -> np.ndarray:
    """Finite values the rule refuses: out of its bounds, or a fraction where it wants an integer."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & ~passes(rule, values)
