"""Engine ``spark``: score with ``mlflow.pyfunc.spark_udf`` on Apache Spark, local or a cluster.

The same row checks as the pandas engine run as a pandas UDF, so both engines reject the
same rows for the same reasons and score the rest identically. Spark reads and writes the
way it does on a cluster: the input may be a file or a directory of part files, and each
output is a directory of part files named like the path given. ``pyspark`` is imported only
here, so the serving image and the pandas engine never need it.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
import uuid
import warnings
import zipfile
from pathlib import Path

import iris_core
from iris_core.schema import FEATURES
from steps.batch_rows import CORRUPT_RECORD, REASON, Tally, check_chunk, check_input_columns, file_format
from steps.errors import StepError

_logger = logging.getLogger(__name__)

_VALUE = "_value_"  # prefix of the checked float64 features while the job runs
_CHECK = "_check"
# What the workers import: the row checks live in steps, the rules they apply in iris_core.
SHIPPED_PACKAGES = (Path(__file__).resolve().parent, Path(iris_core.__file__).resolve().parent)


def require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise StepError("engine spark needs pyspark: pip install -r requirements-spark.txt") from None


@contextlib.contextmanager
def spark_session(master: str, chunk_size: int):
    """A session for one job; a local master binds to loopback and runs workers on this Python."""
    require_pyspark()
    from pyspark.sql import SparkSession

    # Checked by tests/batch: both engines give identical results on this pandas version.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    builder = (
        SparkSession.builder.master(master)
        .appName("iris-batch-predict")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_size))
        .config("spark.sql.session.timeZone", "UTC")
    )
    if master.startswith("local"):
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.pyspark.python", sys.executable)
            .config("spark.pyspark.driver.python", sys.executable)
        )
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM's own errors (no Java, bad master) arrive as plain exceptions
        raise StepError(f"cannot start Spark ({master}): {str(exc).splitlines()[0][:300]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


@contextlib.contextmanager
def shipped_project_code(spark):
    """Send ``steps`` and ``iris_core`` to the workers: the row checks run there as a pandas UDF."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp, f"project-{uuid.uuid4().hex[:8]}.zip")
        with zipfile.ZipFile(archive, "w") as bundle:
            for package in SHIPPED_PACKAGES:
                for source in package.glob("*.py"):
                    bundle.write(source, f"{package.name}/{source.name}")
        spark.sparkContext.addPyFile(str(archive))
        yield


def score_with_spark(
    spark, input_path: str, output_path: str, rejects_path: str, model_uri: str, chunk_size: int
) -> Tally:
    """Check, score and write with Spark; returns the same counts the pandas engine returns."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    paths = [_absolute(path) for path in (input_path, output_path, rejects_path)]
    try:
        return _score(spark, *paths, model_uri, chunk_size)
    except (PySparkException, Py4JError) as exc:
        raise StepError(f"Spark job failed: {_first_line(exc)}") from None


def _absolute(path: str) -> str:
    """Spark resolves a relative path against the JVM's working directory, which need not be ours."""
    return path if re.match(r"^[a-zA-Z][\w+.-]*:", path) else os.path.abspath(path)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _score(spark, input_path, output_path, rejects_path, model_uri, chunk_size) -> Tally:
    import mlflow
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_size))
    with shipped_project_code(spark):
        raw = _read(spark, input_path)
        names = [c for c in raw.columns if c != CORRUPT_RECORD]
        check_input_columns(names)
        predict = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local")
        started = time.perf_counter()
        checked = _checked(raw, names).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            rejects = checked.where(F.col(REASON).isNotNull()).select(REASON, *names)
            _write(rejects, rejects_path)
            features = F.struct(*[F.col(_VALUE + name).alias(name) for name in FEATURES])
            valid = checked.where(F.col(REASON).isNull())
            scored = valid.select(
                *[F.col(_VALUE + n).alias(n) if n in FEATURES else F.col(n) for n in names],
                predict(features).alias("_out"),
            ).select(*names, "_out.prediction", "_out.prediction_index", "_out.confidence", "_out.confidence_scores")
            if file_format(output_path, "output") == "csv":
                scored = scored.withColumn("confidence_scores", F.to_json("confidence_scores"))
            scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
            _write(scored, output_path)
            tally = Tally(rows_read=checked.count(), rows_scored=scored.count(), rows_rejected=rejects.count())
            tally.classes.update(
                {row["prediction"]: row["count"] for row in scored.groupBy("prediction").count().collect()}
            )
            tally.seconds = time.perf_counter() - started
            scored.unpersist()
        finally:
            checked.unpersist()
    return tally


def _read(spark, path: str):
    from pyspark.errors import AnalysisException
    from pyspark.sql.types import StringType, StructField, StructType

    try:
        if file_format(path) == "parquet":
            return spark.read.parquet(path)
        header = spark.read.option("header", True).option("escape", '"').csv(path).schema
        schema = StructType(
            [StructField(f.name, StringType()) for f in header] + [StructField(CORRUPT_RECORD, StringType())]
        )
        return (
            spark.read.schema(schema)
            .option("header", True)
            .option("escape", '"')
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_RECORD)
            .csv(path)
        )
    except AnalysisException as exc:
        raise StepError(f"cannot read {path}: {_first_line(exc)}") from None


def _checked(raw, names: list[str]):
    """The input plus the reason a row fails (null when it passes) and its checked features."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    has_corrupt = CORRUPT_RECORD in raw.columns
    result_type = StructType(
        [StructField(REASON, StringType())] + [StructField(_VALUE + f, DoubleType()) for f in FEATURES]
    )

    @pandas_udf(result_type)
    def check(rows: pd.DataFrame) -> pd.DataFrame:
        features, reasons = check_chunk(rows, len(names))
        return pd.concat([reasons.rename(REASON), features.add_prefix(_VALUE)], axis=1)

    inputs = [*FEATURES, CORRUPT_RECORD] if has_corrupt else list(FEATURES)
    checked = raw.withColumn(_CHECK, check(F.struct(*inputs)))
    if has_corrupt:  # Spark fills a malformed line's fields from its first tokens: drop them, as pandas does
        checked = checked.select(
            *[F.when(F.col(CORRUPT_RECORD).isNull(), F.col(n)).alias(n) for n in names], F.col(_CHECK)
        )
    return checked.select(*names, f"{_CHECK}.*")


def _write(frame, path: str) -> None:
    writer = frame.write.mode("overwrite")
    if file_format(path, "output") == "parquet":
        writer.parquet(path)
    else:
        # Spark trims text when it writes CSV unless told not to; values must leave as they came.
        writer.options(header=True, escape='"', ignoreLeadingWhiteSpace=False, ignoreTrailingWhiteSpace=False).csv(path)
