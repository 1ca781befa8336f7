"""The options several benchmarks share, declared once so their flags, bounds and wording agree.

Each benchmark keeps its own defaults and help where its measurement differs (a run's seconds, how
many rounds); the flag, its type and its bounds come from here.
"""

from pathlib import Path

import click

LOADGEN = click.option(
    "--loadgen",
    type=click.Choice(["auto", "wrk", "python"]),
    default="auto",
    show_default=True,
    help="The load generator: wrk when it is installed (auto), or the Python one.",
)


def duration(default: float = 10.0, help: str = "Seconds per measurement."):
    return click.option("--duration", type=click.FloatRange(min=1), default=default, show_default=True, help=help)


def rounds(default: int, help: str):
    return click.option("--rounds", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def workdir(help: str = "Keep the store and logs here (default: a temporary directory)."):
    return click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help=help)


def _parse_connections(ctx, param, value: str) -> tuple:
    try:
        counts = tuple(int(part) for part in value.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise click.BadParameter("a comma-separated list of positive integers, e.g. 1,8,64")
    return counts


def connections(default: str):
    return click.option(
        "--connections",
        default=default,
        show_default=True,
        callback=_parse_connections,
        help="Concurrencies to measure.",
    )
