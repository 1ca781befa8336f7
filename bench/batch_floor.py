"""The floor of batch scoring: read with Arrow, ``predict_proba`` on 100,000-row blocks, write with Arrow.

Nothing else: no checks, no rejects, no pyfunc wrapper, no MLflow run. The file it writes
has the same columns as the pandas engine's output (the input's, then ``prediction``,
``prediction_index``, ``confidence`` and ``confidence_scores``, a struct in Parquet and
JSON text in CSV), built with the cheapest Arrow calls, so that the ratio of the engine's
time to this one is what the checks, the rejects and the engine's own bookkeeping cost.
Like the engine it gives the model one BLAS thread (faster here than a pool). It runs in a
process of its own, as the engine does, and prints the seconds from opening the input to
closing the output:

    python -m bench.batch_floor --input big.parquet --output floor.parquet --model-uri models:/iris/1
"""

import json
import time

import click
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

BLOCK_ROWS = 100_000


def read_blocks(path: str):
    """Record batches of at most BLOCK_ROWS rows (Arrow's CSV reader cuts its blocks by bytes)."""
    if path.endswith(".parquet"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=BLOCK_ROWS)
        return
    for batch in pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22)):
        for start in range(0, batch.num_rows, BLOCK_ROWS):
            yield batch.slice(start, BLOCK_ROWS)


def scored_block(block: pa.RecordBatch, estimator, classes: pa.Array, as_json: bool) -> pa.Table:
    features = estimator.feature_names_in_  # the model's own: the floor reads what it was trained on
    probabilities = estimator.predict_proba(pd.DataFrame({f: block.column(f).to_numpy() for f in features}))
    best = probabilities.argmax(axis=1)
    names = classes.to_pylist()
    if as_json:
        parts = []
        for i, name in enumerate(names):
            parts += [
                "{" if i == 0 else ",",
                json.dumps(name) + ":",
                pc.cast(pa.array(probabilities[:, i]), pa.string()),
            ]
        scores = pc.binary_join_element_wise(*parts, "}", "")
    else:
        scores = pa.StructArray.from_arrays([probabilities[:, i] for i in range(len(names))], names=names)
    outputs = {
        "prediction": pc.take(classes, pa.array(best)),
        "prediction_index": pa.array(best, pa.int64()),
        "confidence": pa.array(probabilities[np.arange(len(best)), best]),
        "confidence_scores": scores,
    }
    return pa.Table.from_arrays([*block.columns, *outputs.values()], names=[*block.schema.names, *outputs])


def floor(input_path: str, output_path: str, estimator) -> tuple[int, float]:
    """(rows, seconds) of reading, scoring and writing ``input_path`` the cheapest way."""
    classes = pa.array([str(c) for c in estimator.classes_])
    as_json = output_path.endswith(".csv")
    started, rows, writer = time.perf_counter(), 0, None
    with threadpool_limits(limits=1, user_api="blas"):
        for block in read_blocks(input_path):
            table = scored_block(block, estimator, classes, as_json)
            if writer is None:
                writer = (
                    pacsv.CSVWriter(output_path, table.schema)
                    if as_json
                    else pq.ParquetWriter(output_path, table.schema)
                )
            writer.write_table(table)
            rows += table.num_rows
    writer.close()
    return rows, time.perf_counter() - started


@click.command(help="Read, predict_proba and write a file the cheapest way; print rows and seconds as JSON.")
@click.option("--input", "input_path", required=True)
@click.option("--output", required=True)
@click.option("--model-uri", required=True, help="A model of this project; its scikit-learn estimator is used.")
def main(input_path, output, model_uri):
    import mlflow

    estimator = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().estimator
    rows, seconds = floor(input_path, output, estimator)
    click.echo(json.dumps({"rows": rows, "seconds": seconds}))


if __name__ == "__main__":
    main()
