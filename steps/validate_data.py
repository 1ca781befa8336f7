"""Entry point ``validate_data``: check the CSV, fall back to scikit-learn's copy, log the dataset.

Does not fail on bad data: the fallback is the designed behaviour, and its reason is logged
as the run tag ``data_fallback_reason``. With ``--strict`` a bad CSV fails the step (exit
1) before a run is created.
"""

import click

from steps import cli, options
from steps.data import LoadedData, load_dataset, log_dataset


def summary(data: LoadedData) -> str:
    counts = data.frame["species"].value_counts().sort_index()
    line = f"{len(data.frame)} rows from {data.source} ({data.uri}); " + ", ".join(
        f"{k}={v}" for k, v in counts.items()
    )
    if data.fallback_reason:
        line += f"\nfallback reason: {data.fallback_reason}"
    return line


@click.command(help="Validate the Iris CSV (or fall back to scikit-learn's copy) and log it as a dataset input.")
@options.data_path
@options.strict
def main(data_path, strict):
    data = load_dataset(data_path, strict)
    with cli.step_run("validate_data"):
        log_dataset(data, context="validation")
    click.echo(summary(data))


if __name__ == "__main__":
    cli.run(main)
