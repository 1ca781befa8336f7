"""Entry point ``batch_predict``: score a CSV or Parquet file with a registered model version.

The input is checked against the version's contract (``steps.registry.versions``): its features,
their hard rules, finite numbers otherwise. Writes the input's rows with the model's full
output to the output (this project's ``prediction``, ``prediction_index``, ``confidence``,
``confidence_scores``; for any other MLflow model, its answer's class as ``prediction``),
rows that fail the checks to the rejects file with a ``reject_reason``, and logs the row
counts and the class mix to the run. An alias is resolved to its version once, at the start, so a promotion during a long
job cannot mix two models in one file. ``--engine pandas`` streams the file in chunks on
this machine; ``--engine spark`` runs ``mlflow.pyfunc.spark_udf`` on any Spark master.

Each reject carries its line (CSV) or row (Parquet) in the input. The paths are checked
before MLflow is imported: a missing input, or an output that exists and no
``--overwrite``, fails at once without a run. The job shows its progress on stderr.
"""

import logging
from typing import TYPE_CHECKING

import click

from iris_core.contract import BATCH_EXPERIMENT, Tag
from iris_core.refs import is_registry_uri, version_uri
from steps.batch.job import ENGINES, BatchJob, Tally
from steps.batch.job import default_rejects_path as default_rejects_path  # where callers have always found it
from steps.common import cli
from steps.common.metric_names import metric_keys
from steps.registry.uris import check_model_uri, resolve_model_uri

if TYPE_CHECKING:
    from steps.registry.versions import Version

_logger = logging.getLogger(__name__)


def pin_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/N``; other URIs (runs:/, paths) are used as given."""
    import mlflow

    if not is_registry_uri(model_uri):
        return model_uri
    ref = check_model_uri(model_uri)
    return version_uri(ref.name, resolve_model_uri(mlflow.MlflowClient(), ref).version)


def run_job(job: BatchJob, spark=None) -> Tally:
    """Score under the active run and log what happened; ``spark`` is a session the caller owns."""
    import mlflow

    pinned_uri = pin_model_uri(job.model_uri)
    params = {
        "input": job.input,
        "output": job.output,
        "rejects": job.rejects,
        "model_uri": job.model_uri,
        "engine": job.engine,
        "chunk_size": job.chunk_size,
        "spark_master": job.spark_master,
        "overwrite": job.overwrite,
    }
    cli.log_params(params)  # `mlflow run` has logged its own -P values already (rejects as '')
    mlflow.set_tags(
        {
            Tag.MODEL_URI: pinned_uri,
            Tag.REJECTS_PATH: job.rejects,
            Tag.BATCH_ENGINE: job.engine,
            **({Tag.SPARK_MASTER: job.spark_master} if job.engine == "spark" else {}),
        }
    )
    from steps.registry.versions import read_version

    version = read_version(pinned_uri)
    _logger.info("Scoring %s with %s (%s engine)", job.input, pinned_uri, job.engine)
    if job.engine == "pandas":
        tally = _score_with_pandas(job, pinned_uri, version)
    elif spark is not None:
        tally = _score_with_spark(spark, job, pinned_uri, version)
    else:
        from steps.batch.spark_engine import spark_session

        with spark_session(job.spark_master, job.chunk_size) as session:
            tally = _score_with_spark(session, job, pinned_uri, version)
    log_tally(tally)
    return tally


def _score_with_pandas(job: BatchJob, pinned_uri: str, version: "Version") -> Tally:
    import mlflow

    from steps.batch.outputs import model_predict
    from steps.batch.pandas_engine import score_file

    model = mlflow.pyfunc.load_model(pinned_uri)
    return score_file(job.input, job.output, job.rejects, model_predict(model), job.chunk_size, version)


def _score_with_spark(spark, job: BatchJob, pinned_uri: str, version: "Version") -> Tally:
    from steps.batch.spark_engine import score_with_spark

    return score_with_spark(
        spark, job.input, job.output, job.rejects, pinned_uri, job.chunk_size, version, overwrite=job.overwrite
    )


def log_tally(tally: Tally) -> None:
    """Row counts and the class mix (counts and shares of the scored rows) as run metrics."""
    import mlflow

    metrics = {
        "rows_read": tally.rows_read,
        "rows_scored": tally.rows_scored,
        "rows_rejected": tally.rows_rejected,
        "scoring_seconds": tally.seconds,
    }
    mix = tally.class_mix()
    counts, shares = metric_keys("predicted_", mix), metric_keys("predicted_share_", mix)
    for name, count in mix.items():
        metrics[counts[name]] = count
        metrics[shares[name]] = count / tally.rows_scored if tally.rows_scored else 0.0
    mlflow.log_metrics(metrics)


def report(job: BatchJob, tally: Tally) -> str:
    mix = ", ".join(f"{name}={count}" for name, count in tally.class_mix().items())
    return (
        f"scored {tally.rows_scored} of {tally.rows_read} rows ({job.engine} engine) -> {job.output}\n"
        f"rejected {tally.rows_rejected} -> {job.rejects}\n"
        f"class mix: {mix}\n"
        f"took {seconds_text(tally.seconds)} to check, score and write "
        f"({tally.rows_read / max(tally.seconds, 1e-9):,.0f} rows/s)"
    )


def seconds_text(seconds: float) -> str:
    """Three significant digits, so that a small file's few milliseconds do not read as 0.0 s."""
    return f"{seconds:.0f} s" if seconds >= 100 else f"{seconds:#.3g}".rstrip(".") + " s"


@click.command(help="Score a CSV or Parquet file with a registered model; write the scored rows and a rejects file.")
@click.option(
    "--input", "input_path", required=True, help="CSV or Parquet file to score (Spark: a file or a directory)."
)
@click.option(
    "--output",
    required=True,
    help="Scored rows; .csv or .parquet decides the format (Spark writes a directory of part files).",
)
@click.option(
    "--rejects",
    default="",
    help="Rows that fail the checks, with reject_reason. [default: OUTPUT with .rejects before the extension]",
)
@click.option("--model-uri", default=BatchJob.model_uri, show_default=True)
@click.option("--engine", default=BatchJob.engine, show_default=True, help=f"One of {', '.join(ENGINES)}.")
@click.option(
    "--spark-master", default=BatchJob.spark_master, show_default=True, help="Any Spark master URL (engine spark only)."
)
@click.option(
    "--chunk-size", type=int, default=BatchJob.chunk_size, show_default=True, help="Rows handed to the model at a time."
)
@click.option(
    "--overwrite",
    type=click.BOOL,
    default=BatchJob.overwrite,
    is_flag=False,
    flag_value=True,
    show_default=True,
    help="Replace OUTPUT and the rejects file if they exist; without it an existing one stops the job "
    "before it starts. Takes an optional true/false (for MLproject's -P overwrite=...).",
)
def main(input_path, output, rejects, model_uri, engine, spark_master, chunk_size, overwrite):
    job = BatchJob(input_path, output, rejects, model_uri, engine, spark_master, chunk_size, overwrite).validated()
    job.check_files()  # before MLflow is imported or the model resolved: a wrong path fails at once
    if job.engine == "spark":
        from steps.batch.spark_engine import require_pyspark

        require_pyspark()
    with cli.step_run("batch_predict", BATCH_EXPERIMENT):
        tally = run_job(job)
    click.echo(report(job, tally))


if __name__ == "__main__":
    cli.run(main)
