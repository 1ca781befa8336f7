"""Entry point ``validate_data``: check the table against its contract, log it as the run's dataset input.

The contract is the one ``steps.tables.loading`` chooses: a written ``--contract``, Iris's for the
Iris defaults, else one inferred from the table; the check includes the stratified split
``train`` will make (at the default ``test_size``). The Iris table does not fail on bad
data: the fallback to scikit-learn's copy is the designed behaviour, and its reason is
logged as the run tag ``data_fallback_reason``; with ``--strict``, and for any other table,
a table that fails a check fails the step (exit 1) before a run is created.
"""

import click

from steps.common import cli, options
from steps.common.config import TableSpec, TrainConfig
from steps.tables.loading import LoadedData, load_dataset, log_dataset
from steps.training.fitting import split


def summary(data: LoadedData) -> str:
    counts = data.frame[data.label].value_counts().sort_index()
    line = f"{len(data.frame)} rows from {data.source} ({data.uri}); " + ", ".join(
        f"{k}={v}" for k, v in counts.items()
    )
    if data.fallback_reason:
        line += f"\nfallback reason: {data.fallback_reason}"
    return line


@click.command(
    help="Check the table against its contract (Iris's, a written one, or one inferred from the table) and log it "
    "as a dataset input; the Iris table falls back to scikit-learn's copy."
)
@options.table
@options.model_name
@options.strict
def main(data_path, label, contract, model_name, strict):
    data = load_dataset(TableSpec(data_path, label, model_name, contract, strict).validated())
    split(data.frame, TrainConfig(), data.label)  # the split train will make: a table that cannot be split fails here
    with cli.step_run("validate_data"):
        log_dataset(data, context="validation")
    click.echo(summary(data))


if __name__ == "__main__":
    cli.run(main)
