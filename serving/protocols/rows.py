"""A version's table contract compiled into the proxy's per-request checks: from client values to feature rows.

Every body format (MLflow's JSON and CSV in ``serving.protocols.scoring``, Parquet in
``serving.protocols.parquet_body``, the Open Inference Protocol in ``serving.protocols.open_inference``) finds
the values of each row and hands them to one ``RowReader``, built once per model version
from its contract (``iris_core.table``): the contract's features in its order, each value a
JSON number of the feature's type, finite and within the feature's hard rules. A row comes
out as a list in the contract's order, the form the proxy forwards; an integer feature's
values come out as ints, the rest as floats.

Errors never echo the body: they name the row and column, and long client-supplied names
are cut short. The check of one value is a comparison with two bounds compiled from the
rules (``low < value <= high``, inclusive and exclusive ends folded in), so a contract costs
what the hard-coded checks it replaced cost.
"""

from dataclasses import dataclass

from iris_core.table.contract import TableContract
from serving.errors import MAX_DETAILS, HttpError, shorten

# What a request carried that the model does not use (counted by /metrics, never forwarded).
IGNORED_PARAMS = "params"
IGNORED_FIELD = "field"
IGNORED_COLUMN = "column"


@dataclass(frozen=True)
class Limits:
    max_rows: int = 10_000


@dataclass(frozen=True, slots=True)
class Invocation:
    """The rows of one request, in the contract's order, and what the request carried beside them."""

    rows: list[list]
    ignored: frozenset = frozenset()  # IGNORED_PARAMS, IGNORED_FIELD, IGNORED_COLUMN
    unwrapped: bool = False  # answer the bare list of predictions (MLflow's LLM input format)


class ValidationError(HttpError):
    """A client error: the request is refused before anything reaches the model server."""


class RowReader:
    """One contract's checks: which columns a row needs, and whether each value passes."""

    def __init__(self, contract: TableContract):
        self.contract = contract
        self.names = contract.feature_names
        self.name_list = list(self.names)
        self.name_set = frozenset(self.names)
        self.width = len(self.names)
        self.layout = contract.layout
        self.rules = contract.rules
        # (low, high, integer) with ``low < value <= high`` exactly the rules and finiteness.
        self._bounds = tuple(rule.half_open() for rule in self.rules)
        self._integers = any(rule.integer for rule in self.rules)
        self._shown = ", ".join(shorten(name, 40) for name in self.names[:8]) + (
            f" and {self.width - 8} more" if self.width > 8 else ""
        )

    # -- values -------------------------------------------------------------------------------

    def checked_row(self, values, index: int | None, errors: list[str]) -> list:
        """The row in the contract's types; each bad value adds an error naming its row and column."""
        row = []
        for bound, value in zip(self._bounds, values):
            kind = type(value)
            if (kind is float or kind is int) and bound[0] < value <= bound[1]:
                if not bound[2]:
                    row.append(float(value))
                    continue
                if value == int(value):
                    row.append(int(value))
                    continue
            if len(errors) < MAX_DETAILS:
                errors.append(self._problem(len(row), value, index))
            row.append(0)
        return row

    def listed_rows(self, data: list) -> list[list]:
        """Rows given as lists of exactly the features, in order (the common shape): the same rules, fewer steps."""
        rows, errors = [], []
        width = self.width
        for number, row in enumerate(data):
            if type(row) is not list or len(row) != width:
                raise format_error(f"row {number} must be a list of {width} values")
            rows.append(self.checked_row(row, number, errors))
        return finish(rows, errors)

    def _problem(self, position: int, value, index: int | None) -> str:
        rule = self.rules[position]
        name = shorten(rule.name, 40)
        where = name if index is None else f"row {index}, column {name}"
        return f"{where}: {rule.problem(value)}"

    # -- columns ------------------------------------------------------------------------------

    def positions(self, names: list, where: str, repeats: str) -> tuple[list[int], bool]:
        """Where each feature is among ``names``, and whether there are other names (ignored).

        ``repeats``: "refused" (a feature named twice is an error, as in a JSON frame) or
        "first" (the first one counts, as pandas reads a CSV header).
        """
        positions: dict[str, int] = {}
        repeated = []
        wanted = self.name_set
        for position, name in enumerate(names):
            if type(name) is str and name in wanted:
                if name not in positions:
                    positions[name] = position
                elif name not in repeated:
                    repeated.append(name)
        missing = [name for name in self.names if name not in positions]
        if missing or (repeated and repeats == "refused"):
            details = self.missing_details(missing) + [f"repeated column: {shorten(n, 40)}" for n in repeated]
            raise self.columns_error(details, where)
        return [positions[name] for name in self.names], len(names) > self.width

    def missing(self, columns) -> list[str]:
        """The error details for the features ``columns`` (anything with ``in``) lacks."""
        return self.missing_details([name for name in self.names if name not in columns])

    @staticmethod
    def missing_details(names: list[str]) -> list[str]:
        return [f"missing column: {shorten(name, 40)}" for name in names]

    def columns_error(self, details: list[str], where: str) -> ValidationError:
        return ValidationError(400, "INVALID_COLUMNS", f"{where} must have the columns {self._shown}", details)

    def exact_columns(self, columns, where: str = "the input") -> None:
        """Exactly the features, each once; the error names what is missing and what is extra."""
        names = list(columns)
        if len(names) == self.width and set(names) == self.name_set:
            return
        missing = [name for name in self.names if name not in names]
        extra = [name for name in dict.fromkeys(names) if name not in self.name_set]
        details = self.missing_details(missing) + [f"unexpected column: {shorten(str(n), 40)}" for n in extra]
        raise ValidationError(400, "INVALID_COLUMNS", f"{where} must have exactly the columns {self._shown}", details)


def finish(rows: list[list], errors: list[str]) -> list[list]:
    if errors:
        raise ValidationError(400, "INVALID_VALUE", f"invalid feature values ({errors[0]})", errors)
    return rows


def check_count(count: int, limits: Limits) -> None:
    if count == 0:
        raise format_error("there are no rows to score")
    if count > limits.max_rows:
        raise ValidationError(413, "TOO_MANY_ROWS", f"{count} rows is more than the limit of {limits.max_rows}")


def format_error(message: str) -> ValidationError:
    return ValidationError(400, "INVALID_FORMAT", message)
