"""The spark engine (``mlflow.pyfunc.spark_udf`` on a local Spark) against the pandas engine.

Both engines score the same generated files; the scored rows, their values and the rejects
with their reasons must be the same. Spark writes directories of part files; the readers in
``tests/helpers/batch_files.py`` put them back together.
"""

import re
from pathlib import Path

import pytest

from iris_core.table.iris import IRIS
from steps.batch.pandas_engine import score_file
from steps.batch.spark_engine import score_with_spark
from steps.common.errors import StepError
from tests.helpers.batch_files import (
    IRIS_MODEL,
    assert_same_scores,
    read_any,
    scored,
    write_csv,
    write_lines_csv,
    write_parquet,
)
from tests.helpers.tracking import mlflow_run

FEATURES = IRIS.feature_names

pytestmark = pytest.mark.slow

VERSION = "models:/iris/2"


def both_engines(spark, champion, source: str, output: str, rejects: str):
    pandas_tally = score_file(
        source, f"pandas-{output}", f"pandas-{rejects}", champion.predict, version=IRIS_MODEL, chunk_size=300
    )
    spark_tally = score_with_spark(
        spark, source, f"spark-{output}", f"spark-{rejects}", VERSION, version=IRIS_MODEL, chunk_size=300
    )
    return pandas_tally, spark_tally


def test_spark_scores_a_csv_file_exactly_as_the_pandas_engine(spark, champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 1500, seed=3)
    pandas_tally, spark_tally = both_engines(spark, champion, str(data.path), "out.csv", "rejects.csv")
    assert_same_scores(scored("pandas-out.csv"), scored("spark-out.csv"))
    assert len(read_any("spark-out.csv")) == 1500
    assert spark_tally == pandas_tally


def test_spark_scores_a_parquet_file_exactly_as_the_pandas_engine(spark, champion, tmp_path):
    data = write_parquet(tmp_path / "in.parquet", 1500, seed=4)
    pandas_tally, spark_tally = both_engines(spark, champion, str(data.path), "out.parquet", "rejects.parquet")
    assert_same_scores(scored("pandas-out.parquet"), scored("spark-out.parquet"))
    assert spark_tally == pandas_tally


def test_spark_rejects_the_same_rows_for_the_same_reasons(spark, champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 1500, seed=5)
    both_engines(spark, champion, str(data.path), "out.csv", "rejects.csv")
    by_spark = read_any("spark-rejects.csv").sort_values("reject_reason", ignore_index=True)
    by_pandas = read_any("pandas-rejects.csv").sort_values("reject_reason", ignore_index=True)
    assert by_spark.to_dict("records") == by_pandas.to_dict("records")
    assert sorted(by_spark["reject_reason"]) == sorted(data.reasons.values())


def test_spark_keeps_parquet_types_in_the_rejects(spark, champion, tmp_path):
    data = write_parquet(tmp_path / "in.parquet", 600, seed=6)
    both_engines(spark, champion, str(data.path), "out.parquet", "rejects.parquet")
    by_spark = read_any("spark-rejects.parquet")
    assert dict(zip(by_spark["id"], by_spark["reject_reason"])) == data.reasons
    assert str(by_spark["sepal_width"].dtype) == "float64" and str(by_spark["batch"].dtype) == "int32"


def test_mlflow_run_with_engine_spark_scores_on_the_master_it_is_given(registry, tmp_path):
    import mlflow

    data = write_csv(tmp_path / "in.csv", 1200)
    result = mlflow_run(
        "batch_predict",
        *(f"input={data.path}", f"output={tmp_path / 'scores.csv'}", "engine=spark", "spark_master=local[1]"),
        "chunk_size=500",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 1200 of 1211 rows (spark engine)" in result.stdout
    out = scored(tmp_path / "scores.csv")
    assert sorted(out["id"]) == sorted(data.valid_ids)
    assert list(out.columns)[1:5] == list(FEATURES)
    (run,) = mlflow.search_runs(
        filter_string="params.engine = 'spark'", search_all_experiments=True, output_format="list"
    )
    assert run.data.tags["spark_master"] == "local[1]"  # `mlflow run` logs the param shell-quoted
    assert run.data.metrics["rows_scored"] == 1200


def test_spark_numbers_csv_rejects_by_their_lines_as_the_pandas_engine(spark, champion, tmp_path):
    data = write_lines_csv(tmp_path / "in.csv", 2500, seed=11, newline="\r\n")
    pandas_tally, spark_tally = both_engines(spark, champion, str(data.path), "out.csv", "rejects.csv")
    by_spark = read_any("spark-rejects.csv").sort_values("input_line", key=lambda c: c.astype(int), ignore_index=True)
    by_pandas = read_any("pandas-rejects.csv")
    assert by_spark.to_dict("records") == by_pandas.to_dict("records")
    assert dict(zip(by_spark["input_line"].astype(int), by_spark["reject_reason"])) == data.rejects
    assert spark_tally == pandas_tally


def test_spark_numbers_parquet_rejects_by_their_rows_as_the_pandas_engine(spark, champion, tmp_path):
    data = write_parquet(tmp_path / "in.parquet", 1500, seed=12)
    both_engines(spark, champion, str(data.path), "out.parquet", "rejects.parquet")
    by_spark = read_any("spark-rejects.parquet").sort_values("input_row", ignore_index=True)
    by_pandas = read_any("pandas-rejects.parquet")
    assert by_spark[["reject_reason", "input_row", "id"]].to_dict("records") == by_pandas[
        ["reject_reason", "input_row", "id"]
    ].to_dict("records")


def test_spark_rejects_from_a_directory_name_their_part_file_and_line(spark, registry, tmp_path):
    parts = tmp_path / "in.csv"
    parts.mkdir()
    header = "id,sepal_length,sepal_width,petal_length,petal_width"
    (parts / "part-0.csv").write_text(f"{header}\na,5.1,3.5,1.4,0.2\nb,5.1,x,1.4,0.2\n")
    (parts / "part-1.csv").write_text(f"{header}\n\nc,-1,3.5,1.4,0.2\nd,5.1,3.5,1.4,0.2\n")
    score_with_spark(spark, str(parts), "out.csv", "rejects.csv", VERSION, version=IRIS_MODEL, chunk_size=300)
    rejects = read_any("rejects.csv").sort_values("id", ignore_index=True)
    assert list(rejects.columns)[:3] == ["reject_reason", "input_file", "input_line"]
    assert [
        (Path(f).name, int(line), i) for f, line, i in zip(rejects["input_file"], rejects["input_line"], rejects["id"])
    ] == [
        ("part-0.csv", 3, "b"),
        ("part-1.csv", 3, "c"),
    ]


def test_spark_leaves_an_existing_output_alone_unless_told_to_overwrite(spark, registry, tmp_path):
    data = write_csv(tmp_path / "in.csv", 200)
    score_with_spark(spark, str(data.path), "out.csv", "rejects.csv", VERSION, version=IRIS_MODEL, chunk_size=300)
    with pytest.raises(StepError, match="already exists"):
        score_with_spark(spark, str(data.path), "out.csv", "rejects2.csv", VERSION, version=IRIS_MODEL, chunk_size=300)
    tally = score_with_spark(
        spark, str(data.path), "out.csv", "rejects.csv", VERSION, version=IRIS_MODEL, chunk_size=300, overwrite=True
    )
    assert tally.rows_scored == len(read_any("out.csv")) == 200


def test_spark_progress_follows_the_tasks_of_its_stages(spark, tmp_path, monkeypatch):
    from steps.batch import spark_engine as batch_spark

    updates = []

    class Recorder:
        def update(self, fraction, detail="", eta=True):
            updates.append((fraction, detail))

        def finish(self):
            updates.append("finished")

    monkeypatch.setattr(batch_spark, "progress", lambda label: Recorder())
    with batch_spark._progress(spark, every=0.05):
        spark.range(0, 40_000_000, numPartitions=8).selectExpr("sum(id % 7)").collect()
    assert updates[-1] == "finished"
    assert any(re.fullmatch(r"Spark stage [\d, ]+: \d+ of \d+ tasks", detail) for _, detail in updates[:-1])
