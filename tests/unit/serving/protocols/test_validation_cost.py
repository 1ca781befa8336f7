"""Validation costs time linear in the body, for every shape a hostile client can send within the limits.

One request is validated on the proxy's event loop, so a check that is quadratic in some
dimension of the body (the number of keys, columns, header fields or rows, or the length
of one field) lets a single request of a megabyte freeze every other request for a minute
(60,000 keys took 64 s before). Each test builds the largest body of one shape that
``--max-body-bytes`` lets in, with as many rows as ``--max-rows`` allows, and compares the
time validation takes with the time a linear reading of the same bytes takes, measured
side by side: Python's ``json.loads`` for JSON, ``csv.reader`` for CSV. Linear validation
costs a few such readings (at most 6 measured on a busy 2-core machine); a quadratic path
costs thousands at these sizes, and fails as soon as it passes the bound, without waiting
for it to end.
"""

import csv
import gc
import io
import json
import multiprocessing
import re
import time

import pytest

from iris_core.table.iris import IRIS
from iris_core.table.rules import NUMBER
from serving.config import ServingConfig
from serving.protocols.rows import RowReader
from serving.protocols.scoring import Limits, ValidationError, parse_invocation, predict_row
from tests.helpers.iris import FEATURES

MAX_BODY = ServingConfig.max_body_bytes
MAX_ROWS = ServingConfig.max_rows
LIMITS = Limits(max_rows=MAX_ROWS)
MAX_READINGS = 25  # validation may cost this many linear readings of the body, no more
JSON = "application/json"
CSV = "text/csv"
FEATURE_VALUES = dict.fromkeys(FEATURES, 1.0)
READER = RowReader(IRIS)


def names(n: int) -> list[str]:
    return [f"c{i}" for i in range(n)]


def longest_field(n: int) -> int:
    return min(n, csv.field_size_limit() - 8)


def rows(n: int) -> int:
    """A second dimension that grows with the first, up to --max-rows."""
    return min(max(n // 16, 1), MAX_ROWS)


def as_json(document) -> tuple[str, bytes]:
    return JSON, json.dumps(document, separators=(",", ":")).encode()


def csv_body(header: list[str], rows: list[str]) -> tuple[str, bytes]:
    return CSV, "\n".join([",".join(header), *rows]).encode() + b"\n"


SHAPES = {
    # /predict: one object with many keys
    "predict object keys": lambda n: ("/predict", *as_json(dict.fromkeys(names(n), 1))),
    # /invocations, JSON
    "a record with many keys": lambda n: (
        "/invocations",
        *as_json({"dataframe_records": [{**dict.fromkeys(names(n), 1), **FEATURE_VALUES}]}),
    ),
    "a record of many keys and no feature": lambda n: (
        "/invocations",
        *as_json({"dataframe_records": [dict.fromkeys(names(n), 1)]}),
    ),
    "instances of many keys": lambda n: (
        "/invocations",
        *as_json({"instances": [{**dict.fromkeys(names(n), 1), **FEATURE_VALUES}]}),
    ),
    "inputs of many columns": lambda n: (
        "/invocations",
        *as_json({"inputs": {**{name: [1] for name in names(n)}, **{f: [1.0] for f in FEATURES}}}),
    ),
    "split columns": lambda n: (
        "/invocations",
        *as_json({"dataframe_split": {"columns": [*names(n), *FEATURES], "data": [[1.0] * (n + 4)]}}),
    ),
    "split columns over many object rows": lambda n: (
        "/invocations",
        *as_json({"dataframe_split": {"columns": names(n), "data": [{}] * rows(n)}}),
    ),
    "a long run of digits": lambda n: ("/invocations", JSON, b'{"dataframe_records": [{"a": ' + b"1" * n + b"}]}"),
    "deep nesting": lambda n: ("/invocations", JSON, b'{"inputs": ' + b"[" * n),
    # /invocations, CSV
    "csv header": lambda n: ("/invocations", *csv_body([*names(n), *FEATURES], ["1," * (n + 3) + "1"])),
    "csv header over many short rows": lambda n: (
        "/invocations",
        *csv_body([*names(n), *FEATURES], ["1"] * rows(n)),
    ),
    # csv.reader refuses a field longer than its limit (128 KiB), so many rows of the longest
    "csv fields of digits then a letter": lambda n: (
        "/invocations",
        *csv_body(list(FEATURES), ["1,1,1," + "1" * longest_field(n) + "x"] * (n // longest_field(n))),
    ),
    "csv fields of blanks around a number": lambda n: (
        "/invocations",
        *csv_body(list(FEATURES), ["1,1,1," + " " * (longest_field(n) // 2) + "1 x"] * (n // longest_field(n))),
    ),
}


def validate(endpoint: str, content_type: str, body: bytes) -> None:
    try:
        if endpoint == "/predict":
            predict_row(content_type, body, READER)
        else:
            parse_invocation(content_type, body, LIMITS, READER)
    except ValidationError:
        pass  # most of these are refused; the time to say so is what counts


def read_linearly(endpoint: str, content_type: str, body: bytes) -> None:
    """The reference: one pass of a linear-time library reader over the same bytes."""
    try:
        if content_type == CSV:
            list(csv.reader(io.StringIO(body.decode(), newline="")))
        else:
            json.loads(body)
    except (ValueError, RecursionError, csv.Error):
        pass


def seconds(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def readings(reference, function, args: tuple, limit: float) -> float:
    """How many runs of ``reference(*args)`` one run of ``function(*args)`` costs: the fewer of two tries.

    Both run side by side in a forked child, which is killed once ``function`` is far past
    ``limit`` readings: a regular expression holds the interpreter lock while it
    backtracks, so nothing in this process could stop it.
    """
    budget = limit * max(seconds(reference, *args), 0.001) + 2.0  # the child's start is not measured
    context = multiprocessing.get_context("fork")
    tries = []
    for _ in range(2):
        reader, writer = context.Pipe(duplex=False)

        def measure():
            gc.freeze()  # the test process's heap is not the proxy's: its collections must not count
            base = max(min(seconds(reference, *args) for _ in range(2)), 0.001)
            writer.send(seconds(function, *args) / base)

        child = context.Process(target=measure, daemon=True)
        child.start()
        writer.close()
        try:
            if not reader.poll(budget):
                pytest.fail(f"{function.__name__} took more than {budget:.1f} s, over {limit:g} readings")
            tries.append(reader.recv())
        finally:
            child.kill()
            child.join()
    return min(tries)


def largest(make) -> int:
    """About the largest n whose body fits within --max-body-bytes (body sizes grow about linearly in n)."""
    one, two = len(make(1000)[2]), len(make(2000)[2])
    n = int(1000 + (MAX_BODY - one) * 1000 / (two - one))
    while len(make(n)[2]) > MAX_BODY:
        n = int(n * 0.99)
    return n


@pytest.mark.parametrize("shape", SHAPES)
def test_the_largest_body_of_each_shape_costs_time_linear_in_its_size(shape):
    body = SHAPES[shape](largest(SHAPES[shape]))
    assert MAX_BODY * 0.8 < len(body[2]) <= MAX_BODY
    cost = readings(read_linearly, validate, body, MAX_READINGS)
    assert cost < MAX_READINGS, f"{shape}: validation cost {cost:.0f} linear readings of the body"


def test_the_csv_number_pattern_is_linear_in_the_length_of_a_digit_run():
    """``\\d+\\.?\\d*`` backtracks quadratically on digits followed by a non-digit (40 KB: 62 s); ``NUMBER`` must not.

    Failing to match backtracks once over the run, trying each way to go on at every digit:
    a few dozen passes of a plain linear pattern over the same text, where the quadratic
    pattern costs hundreds of thousands.
    """
    assert NUMBER.fullmatch("1" * 20 + "x") is None and NUMBER.fullmatch("1" * 20) is not None
    text = "1" * MAX_BODY + "x"
    cost = readings(re.compile(r"\d+x").fullmatch, NUMBER.fullmatch, (text,), 100)
    assert cost < 100, f"matching took {cost:.0f} readings"
