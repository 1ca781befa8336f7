"""The proxy with its request checks as they were before table contracts: the benchmark's reference for their cost.

Until versions carried contracts, the proxy's checks were written for Iris alone: four
features, each a number in (0, 1e6], in a loop with the bounds as constants. This module
keeps that hot path, frozen as it was (``checked_row`` and the list-of-lists short path of
``dataframe_split``), and runs ``python -m serving`` with it in place of the contract's
compiled checks for an Iris contract, so that the serving benchmark can drive both side by
side with everything else equal. Run it as ``python -m bench.hardcoded_iris`` with the
options of ``python -m serving``.
"""

from iris_core.table.iris import IRIS, MAX_VALUE
from serving.errors import MAX_DETAILS
from serving.protocols.rows import RowReader, finish, format_error

FEATURES = IRIS.feature_names


def checked_row(values: list, index: int | None, errors: list[str]) -> list[float]:
    """The row as floats; each bad value adds an error naming its row and column (the pre-contract loop)."""
    row = []
    for name, value in zip(FEATURES, values):
        kind = type(value)
        if (kind is float or kind is int) and 0 < value <= MAX_VALUE:
            row.append(float(value))
            continue
        if len(errors) < MAX_DETAILS:
            where = name if index is None else f"row {index}, column {name}"
            errors.append(f"{where}: {IRIS.rules[0].problem(value)}")
        row.append(0.0)
    return row


def listed_rows(data: list) -> list[list[float]]:
    """``dataframe_split`` rows as lists of the four features in order (the pre-contract short path)."""
    rows, errors = [], []
    for number, row in enumerate(data):
        if type(row) is not list or len(row) != len(FEATURES):
            raise format_error(f"row {number} must be a list of {len(FEATURES)} values")
        rows.append(checked_row(row, number, errors))
    return finish(rows, errors)


def frozen(reader: RowReader) -> RowReader:
    """``reader`` with the pre-contract checks in place of its compiled ones, when its contract is Iris's."""
    if reader.layout == IRIS.layout:
        reader.checked_row = checked_row
        reader.listed_rows = listed_rows
    return reader


def main() -> None:
    from serving.cli import main as serve

    contract_init = RowReader.__init__

    def init(self, contract):
        contract_init(self, contract)
        frozen(self)

    RowReader.__init__ = init
    serve()


if __name__ == "__main__":
    main()
