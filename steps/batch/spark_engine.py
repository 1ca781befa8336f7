"""Engine ``spark``: score with ``mlflow.pyfunc.spark_udf`` on Apache Spark, local or a cluster.

The same row checks as the pandas engine run as a pandas UDF, so both engines reject the
same rows for the same reasons and score the rest identically. Spark reads and writes the
way it does on a cluster: the input may be a file or a directory of part files, and each
output is a directory of part files named like the path given. ``pyspark`` is imported only
here, so the serving image and the pandas engine never need it.

Rejects say where they were, as the pandas engine's do: a CSV file is read as lines
(numbered per file from each block's first line, which a small aggregate finds) and parsed
with ``from_csv``, so the numbers are the file's own lines; Parquet rows carry Spark's
``_metadata.row_index``. For a directory of part files the rejects also name the file.
"""

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from pathlib import Path

import iris_core
from iris_core.table.contract import TableContract
from steps.batch.job import INPUT_FILE, Tally, file_format, is_uri, position_column
from steps.batch.outputs import output_columns
from steps.batch.progress import progress
from steps.batch.rows import CORRUPT_RECORD, REASON, check_chunk, check_input_columns
from steps.common.errors import StepError
from steps.registry.versions import Version

_logger = logging.getLogger(__name__)

_VALUE = "_value_"  # prefix of the checked float64 features while the job runs
_CHECK = "_check"
_WHERE = "_where"  # the input line or row, while the job runs
_FILE = "_file"
# What the workers import: the row checks live in steps (steps.batch), the rules they apply in iris_core.
SHIPPED_PACKAGES = (Path(__file__).resolve().parents[1], Path(iris_core.__file__).resolve().parent)  # steps, iris_core


def _col(name: str):
    """The column ``name`` as written: Spark would read a dot in a plain name as a struct's field."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


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

    # Checked by tests/integration/steps/test_spark_engine.py: both engines give identical results on this pandas version.
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
        # A local master's Python workers run PYSPARK_PYTHON, else whatever `python3` the PATH
        # finds first (PySpark reads no setting for it): unset, a step started as
        # `.venv/bin/python -m steps.batch_predict` without the venv activated would score in a
        # Python without pandas or MLflow.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.pyspark.python", sys.executable)
            .config("spark.pyspark.driver.python", sys.executable)
        )
    # SparkContext installs a SIGINT handler of its own and leaves it behind when stopped, where
    # Ctrl-C then fails inside it (its JVM is gone): the caller's handler comes back afterwards.
    interrupt_handler = signal.getsignal(signal.SIGINT)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM's own errors (no Java, bad master) arrive as plain exceptions
        _restore_interrupt_handler(interrupt_handler)
        raise StepError(f"cannot start Spark ({master}): {str(exc).splitlines()[0][:300]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()
        _restore_interrupt_handler(interrupt_handler)


def _restore_interrupt_handler(handler) -> None:
    if threading.current_thread() is threading.main_thread():  # only the main thread may set one
        signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def shipped_project_code(spark):
    """Send ``steps`` and ``iris_core`` to the workers: the row checks run there as a pandas UDF."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp, f"project-{uuid.uuid4().hex[:8]}.zip")
        with zipfile.ZipFile(archive, "w") as bundle:
            for package in SHIPPED_PACKAGES:
                for source in package.rglob("*.py"):
                    bundle.write(source, f"{package.name}/{source.relative_to(package).as_posix()}")
        spark.sparkContext.addPyFile(str(archive))
        yield


def score_with_spark(
    spark,
    input_path: str,
    output_path: str,
    rejects_path: str,
    model_uri: str,
    chunk_size: int,
    version: Version,
    overwrite: bool = False,
) -> Tally:
    """Check, score and write with Spark; returns the same counts the pandas engine returns."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    paths = [_absolute(path) for path in (input_path, output_path, rejects_path)]
    mode = "overwrite" if overwrite else "errorifexists"
    try:
        with _progress(spark):
            return _score(spark, *paths, model_uri, chunk_size, version, mode)
    except (PySparkException, Py4JError) as exc:
        raise StepError(f"Spark job failed: {_first_line(exc)}") from None


def _absolute(path: str) -> str:
    """Spark resolves a relative path against the JVM's working directory, which need not be ours."""
    return path if is_uri(path) else os.path.abspath(path)


@contextlib.contextmanager
def _progress(spark, every: float = 0.5):
    """The running stages' tasks, done of all, as a bar or log lines (Spark's own console bar stays off)."""
    meter, stop = progress("scoring"), threading.Event()
    tracker = spark.sparkContext.statusTracker()

    def poll() -> None:
        while not stop.wait(every):
            stages = [info for info in map(tracker.getStageInfo, tracker.getActiveStageIds()) if info]
            total = sum(info.numTasks for info in stages)
            if total:
                done = sum(info.numCompletedTasks for info in stages)
                names = ", ".join(str(info.stageId) for info in stages)
                meter.update(done / total, f"Spark stage {names}: {done} of {total} tasks", eta=False)

    poller = threading.Thread(target=poll, name="spark-progress", daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join(timeout=5)
        meter.finish()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _score(spark, input_path, output_path, rejects_path, model_uri, chunk_size, version: Version, mode: str) -> Tally:
    import mlflow
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    contract = version.contract
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_size))
    with shipped_project_code(spark):
        raw, names = _read(spark, input_path)
        check_input_columns(names, contract, output_columns(version.project_outputs))
        predict = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local")
        started = time.perf_counter()
        checked = _checked(raw, names, contract).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            where = [F.col(_FILE).alias(INPUT_FILE)] if _is_many_files(input_path) else []
            where.append(F.col(_WHERE).alias(position_column(input_path)))
            rejects = checked.where(F.col(REASON).isNotNull()).select(REASON, *where, *map(_col, names))
            _write(rejects, rejects_path, mode)
            features = set(contract.feature_names)
            inputs = F.struct(*[_typed(_col(_VALUE + f.name), f.type).alias(f.name) for f in contract.features])
            valid = checked.where(F.col(REASON).isNull())
            scored = valid.select(
                *[_col(_VALUE + n).alias(n) if n in features else _col(n) for n in names],
                predict(inputs).alias("_out"),
            )
            if version.project_outputs:
                outputs = [F.col(f"_out.{name}") for name in output_columns(True)]
                scored = scored.select(*map(_col, names), *outputs)
                if file_format(output_path, "output") == "csv":
                    scored = scored.withColumn("confidence_scores", F.to_json("confidence_scores"))
            else:
                scored = scored.select(*map(_col, names), _answer_classes()("_out").alias("prediction"))
            scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
            _write(scored, output_path, mode)
            tally = Tally(
                rows_read=checked.count(),
                rows_scored=scored.count(),
                rows_rejected=rejects.count(),
                known_classes=contract.classes,
            )
            tally.classes.update(
                {row["prediction"]: row["count"] for row in scored.groupBy("prediction").count().collect()}
            )
            tally.seconds = time.perf_counter() - started
            scored.unpersist()
        finally:
            checked.unpersist()
    return tally


def _is_many_files(path: str) -> bool:
    """A directory of part files, or a location Spark lists itself: the rejects then name their file."""
    return is_uri(path) or Path(path).is_dir()


def _read(spark, path: str):
    """(the input with ``_file`` and ``_where`` beside its columns, the input's column names)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    try:
        if file_format(path) == "parquet":
            frame = spark.read.parquet(path)
            names = frame.columns
            return frame.select(
                *names, F.col("_metadata.file_path").alias(_FILE), F.col("_metadata.row_index").alias(_WHERE)
            ), names
        names = spark.read.option("header", True).option("escape", '"').csv(path).columns
        return _csv_records(spark, path, names), names
    except AnalysisException as exc:
        raise StepError(f"cannot read {path}: {_first_line(exc)}") from None


def _csv_records(spark, path: str, names: list[str]):
    """The CSV's records, each with its file and line; malformed lines keep their text in the corrupt-record column.

    Lines end as Arrow's reader ends them (``\n``, ``\r\n``, ``\r``); the header (line 1 of
    each file) and empty lines are no records, a line of blanks is a malformed one.
    """
    from pyspark.sql import functions as F

    lines = spark.read.text(path).select(
        "value",
        F.col("_metadata.file_path").alias(_FILE),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_id"),  # consecutive within a block, which Spark reads in order
    )
    blocks = lines.groupBy(_FILE, "_block").agg(F.count("*").alias("_lines"), F.min("_id").alias("_first_id"))
    firsts, seen = [], {}
    for block in sorted(blocks.collect(), key=lambda row: (row[_FILE], row["_block"])):
        firsts.append((block[_FILE], block["_block"], block["_first_id"], seen.get(block[_FILE], 0) + 1))
        seen[block[_FILE]] = seen.get(block[_FILE], 0) + block["_lines"]
    starts = spark.createDataFrame(firsts, f"{_FILE} STRING, _block LONG, _first_id LONG, _first_line LONG")
    numbered = lines.join(F.broadcast(starts), [_FILE, "_block"]).select(
        "value", _FILE, (F.col("_first_line") + F.col("_id") - F.col("_first_id")).alias(_WHERE)
    )
    fields = ", ".join(f"`{name.replace('`', '``')}` STRING" for name in [*names, CORRUPT_RECORD])
    options = {"escape": '"', "mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD}
    return (
        numbered.where((F.col(_WHERE) > 1) & (F.col("value") != ""))
        .select(F.from_csv("value", fields, options).alias("_record"), _FILE, _WHERE)
        .select("_record.*", _FILE, _WHERE)
    )


def _typed(column, kind: str):
    """A checked (float64) feature as the type the model declares for it."""
    from pyspark.sql.types import DoubleType, FloatType, IntegerType, LongType

    spark_type = {"double": DoubleType(), "float": FloatType(), "long": LongType(), "integer": IntegerType()}[kind]
    return column if kind == "double" else column.cast(spark_type)


def _answer_classes():
    """Any other model's answer per row, as the class it names in text (as the pandas engine writes it)."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import StringType

    @pandas_udf(StringType())
    def classes(answers: pd.Series) -> pd.Series:
        from steps.registry.versions import answer_classes

        return pd.Series(answer_classes(answers), dtype=object)

    return classes


def _checked(raw, names: list[str], contract: TableContract):
    """The input plus the reason a row fails (null when it passes) and its checked features."""
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    features = list(contract.feature_names)
    has_corrupt = CORRUPT_RECORD in raw.columns
    result_type = StructType(
        [StructField(REASON, StringType())] + [StructField(_VALUE + f, DoubleType()) for f in features]
    )

    @pandas_udf(result_type)
    def check(rows: pd.DataFrame) -> pd.DataFrame:
        checked, reasons = check_chunk(rows, contract, len(names))
        return pd.concat([reasons.rename(REASON), checked.add_prefix(_VALUE)], axis=1)

    inputs = [*features, CORRUPT_RECORD] if has_corrupt else features
    checked = raw.withColumn(_CHECK, check(F.struct(*map(_col, inputs))))
    if has_corrupt:  # Spark fills a malformed line's fields from its first tokens: drop them, as pandas does
        checked = checked.select(
            *[F.when(F.col(CORRUPT_RECORD).isNull(), _col(n)).alias(n) for n in names], _FILE, _WHERE, F.col(_CHECK)
        )
    return checked.select(*map(_col, names), _FILE, _WHERE, f"{_CHECK}.*")


def _write(frame, path: str, mode: str) -> None:
    writer = frame.write.mode(mode)
    if file_format(path, "output") == "parquet":
        writer.parquet(path)
    else:
        # Spark trims text when it writes CSV unless told not to; values must leave as they came.
        writer.options(header=True, escape='"', ignoreLeadingWhiteSpace=False, ignoreTrailingWhiteSpace=False).csv(path)
