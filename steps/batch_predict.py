"""Entry point ``batch_predict``: score a CSV or Parquet file with a registered model version.

Writes the input's rows with the model's full output (``prediction``, ``prediction_index``,
``confidence``, ``confidence_scores``) to the output, rows that fail the checks to the
rejects file with a ``reject_reason``, and logs the row counts and the class mix to the
run. An alias is resolved to its version once, at the start, so a promotion during a long
job cannot mix two models in one file. ``--engine pandas`` streams the file in chunks on
this machine; ``--engine spark`` runs ``mlflow.pyfunc.spark_udf`` on any Spark master.
"""

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

import click

from iris_core.contract import BATCH_EXPERIMENT, Tag
from iris_core.refs import CHAMPION, DEFAULT_MODEL_NAME, alias_uri, is_registry_uri, version_uri
from steps import cli
from steps.batch_rows import Tally, file_format
from steps.errors import InvalidParameter
from steps.registry import check_model_uri, resolve_model_uri

_logger = logging.getLogger(__name__)

ENGINES = ("pandas", "spark")
DEFAULT_CHUNK_SIZE = 100_000


@dataclass(frozen=True)
class BatchJob:
    """What to score and how; built only through ``validated`` so a bad value never starts a run."""

    input: str
    output: str
    rejects: str = ""
    model_uri: str = alias_uri(DEFAULT_MODEL_NAME, CHAMPION)
    engine: str = "pandas"
    spark_master: str = "local[*]"
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def validated(self) -> "BatchJob":
        if self.engine not in ENGINES:
            raise InvalidParameter(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.chunk_size < 1:
            raise InvalidParameter(f"chunk_size must be a positive integer, got {self.chunk_size}")
        file_format(self.input, "input")
        file_format(self.output, "output")
        rejects = self.rejects or default_rejects_path(self.output)
        file_format(rejects, "rejects")
        paths = {_normal(self.input), _normal(self.output), _normal(rejects)}
        if len(paths) != 3:
            raise InvalidParameter("input, output and rejects must be three different paths")
        return BatchJob(
            self.input, self.output, rejects, self.model_uri, self.engine, self.spark_master, self.chunk_size
        )


def default_rejects_path(output: str) -> str:
    """``scores.csv`` -> ``scores.rejects.csv``, beside the output and in its format."""
    path = PurePosixPath(output.rstrip("/"))
    return str(path.with_name(f"{path.stem}.rejects{path.suffix}"))


def _normal(path: str) -> str:
    return str(PurePosixPath(path.rstrip("/")))


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
    _logger.info("Scoring %s with %s (%s engine)", job.input, pinned_uri, job.engine)
    if job.engine == "pandas":
        tally = _score_with_pandas(job, pinned_uri)
    elif spark is not None:
        tally = _score_with_spark(spark, job, pinned_uri)
    else:
        from steps.batch_spark import spark_session

        with spark_session(job.spark_master, job.chunk_size) as session:
            tally = _score_with_spark(session, job, pinned_uri)
    log_tally(tally)
    return tally


def _score_with_pandas(job: BatchJob, pinned_uri: str) -> Tally:
    import mlflow

    from steps.batch_outputs import model_predict
    from steps.batch_pandas import score_file

    model = mlflow.pyfunc.load_model(pinned_uri)
    return score_file(job.input, job.output, job.rejects, model_predict(model), job.chunk_size)


def _score_with_spark(spark, job: BatchJob, pinned_uri: str) -> Tally:
    from steps.batch_spark import score_with_spark

    return score_with_spark(spark, job.input, job.output, job.rejects, pinned_uri, job.chunk_size)


def log_tally(tally: Tally) -> None:
    """Row counts and the class mix (counts and shares of the scored rows) as run metrics."""
    import mlflow

    metrics = {
        "rows_read": tally.rows_read,
        "rows_scored": tally.rows_scored,
        "rows_rejected": tally.rows_rejected,
        "scoring_seconds": tally.seconds,
    }
    for name, count in tally.class_mix().items():
        metrics[f"predicted_{name}"] = count
        metrics[f"predicted_share_{name}"] = count / tally.rows_scored if tally.rows_scored else 0.0
    mlflow.log_metrics(metrics)


def report(job: BatchJob, tally: Tally) -> str:
    mix = ", ".join(f"{name}={count}" for name, count in tally.class_mix().items())
    return (
        f"scored {tally.rows_scored} of {tally.rows_read} rows ({job.engine} engine) -> {job.output}\n"
        f"rejected {tally.rows_rejected} -> {job.rejects}\n"
        f"class mix: {mix}\n"
        f"took {tally.seconds:.1f} s to check, score and write ({tally.rows_read / max(tally.seconds, 1e-9):,.0f} rows/s)"
    )


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
def main(input_path, output, rejects, model_uri, engine, spark_master, chunk_size):
    job = BatchJob(input_path, output, rejects, model_uri, engine, spark_master, chunk_size).validated()
    if job.engine == "spark":
        from steps.batch_spark import require_pyspark

        require_pyspark()
    with cli.step_run("batch_predict", BATCH_EXPERIMENT):
        tally = run_job(job)
    click.echo(report(job, tally))


if __name__ == "__main__":
    cli.run(main)
