"""The pandas engine on generated files with bad rows, scored by the registry's real champion."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from iris_core.table.iris import IRIS
from steps.batch.pandas_engine import score_file
from steps.batch_predict import BatchJob, run_job
from steps.common.errors import StepError
from tests.helpers.batch_files import BAD_CSV, IRIS_MODEL, MALFORMED_CSV, read_any, scored, write_csv, write_parquet

CLASSES, FEATURES = IRIS.classes, IRIS.feature_names


def expected_scores(champion, frame: pd.DataFrame) -> pd.DataFrame:
    return champion.predict(frame[list(FEATURES)].astype("float64"))


def test_every_valid_csv_row_is_scored_with_the_models_full_output(champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 1200)
    tally = score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=250)
    out = read_any("out.csv")
    assert out["id"].tolist() == data.valid_ids  # input order kept
    assert list(out.columns) == [
        "id",
        *FEATURES,
        "note",
        "prediction",
        "prediction_index",
        "confidence",
        "confidence_scores",
    ]
    expected = expected_scores(champion, out)
    assert out["prediction"].tolist() == expected["prediction"].tolist()
    assert out["prediction_index"].astype(int).tolist() == expected["prediction_index"].tolist()
    assert out["confidence"].astype(float).tolist() == pytest.approx(expected["confidence"].tolist(), abs=1e-12)
    assert [set(s) for s in out["confidence_scores"]] == [set(CLASSES)] * len(out)
    assert out["note"].tolist()[:3] == ["n, 0", "n, 1", "n, 2"]  # quoted text passes through
    assert (tally.rows_read, tally.rows_scored, tally.rows_rejected) == (1200 + 11, 1200, 11)
    assert sum(tally.classes.values()) == 1200


def test_bad_rows_go_to_the_rejects_file_with_their_reason_and_original_values(champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 1200)
    score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=100)
    rejects = read_any("rejects.csv")
    assert list(rejects.columns) == ["reject_reason", "input_line", "id", *FEATURES, "note"]
    by_id = dict(zip(rejects["id"], rejects["reject_reason"]))
    assert {k: by_id[k] for k in BAD_CSV} == {k: reason for k, (_, reason) in BAD_CSV.items()}
    text = rejects.set_index("id").loc["bad-text"]
    assert (text["sepal_width"], text["note"]) == ("abc", "q")  # as read, not as parsed


def test_lines_with_the_wrong_number_of_fields_are_rejected_not_fatal(champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 1200)
    score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=100)
    rejects = read_any("rejects.csv")
    malformed = rejects[rejects["reject_reason"].str.startswith("malformed")]
    assert sorted(malformed["reject_reason"]) == sorted(reason for _, reason in MALFORMED_CSV.values())
    assert (malformed[["id", *FEATURES]] == "").all().all()  # nothing half-parsed is kept


def test_parquet_keeps_column_types_and_writes_scores_as_a_struct(champion, tmp_path):
    data = write_parquet(tmp_path / "in.parquet", 900)
    tally = score_file(
        str(data.path), "out.parquet", "rejects.parquet", champion.predict, version=IRIS_MODEL, chunk_size=128
    )
    schema = pq.read_schema("out.parquet")
    assert str(schema.field("batch").type) == "int32"
    assert (
        str(schema.field("confidence_scores").type) == "struct<setosa: double, versicolor: double, virginica: double>"
    )
    out = scored("out.parquet")
    assert sorted(out["id"]) == sorted(data.valid_ids)
    rejects = read_any("rejects.parquet")
    assert dict(zip(rejects["id"], rejects["reject_reason"])) == data.reasons
    assert str(pq.read_schema("rejects.parquet").field("sepal_width").type) == "double"
    assert (tally.rows_scored, tally.rows_rejected) == (900, len(data.reasons))


def test_csv_in_parquet_out_and_back_give_the_same_scores(champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 1200)
    score_file(str(data.path), "out.parquet", "rejects.parquet", champion.predict, version=IRIS_MODEL, chunk_size=500)
    score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=500)
    as_parquet, as_csv = scored("out.parquet"), scored("out.csv")
    assert as_parquet["confidence_scores"].tolist() == as_csv["confidence_scores"].tolist()
    assert as_parquet["confidence"].tolist() == as_csv["confidence"].tolist()


def test_the_model_never_gets_more_than_chunk_size_rows_at_a_time(champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 1200)
    sizes = []

    def recording_predict(frame):
        sizes.append(len(frame))
        return champion.predict(frame)

    score_file(str(data.path), "out.csv", "rejects.csv", recording_predict, version=IRIS_MODEL, chunk_size=64)
    assert max(sizes) <= 64
    assert sum(sizes) == 1200
    assert len(sizes) >= 1200 // 64


def test_a_file_missing_a_feature_column_fails_and_leaves_no_output(champion, tmp_path):
    (tmp_path / "in.csv").write_text("id,sepal_length,sepal_width,petal_length\n1,5.1,3.5,1.4\n")
    with pytest.raises(StepError, match="input has no column petal_width"):
        score_file(
            str(tmp_path / "in.csv"), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=10
        )
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name or "rejects" in p.name) == []


def test_a_file_with_only_a_header_gives_empty_outputs(champion, tmp_path):
    (tmp_path / "in.csv").write_text("sepal_length,sepal_width,petal_length,petal_width\n")
    tally = score_file(
        str(tmp_path / "in.csv"), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=10
    )
    assert (tally.rows_read, tally.rows_scored) == (0, 0)
    assert read_any("out.csv").columns[-1] == "confidence_scores"


def test_a_job_logs_row_counts_class_mix_and_the_version_it_used(registry, tmp_path):
    import mlflow

    data = write_csv(tmp_path / "in.csv", 1200)
    with mlflow.start_run() as run:
        tally = run_job(BatchJob(str(data.path), "out.csv", chunk_size=300).validated())
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert (logged.metrics["rows_read"], logged.metrics["rows_scored"], logged.metrics["rows_rejected"]) == (
        1211,
        1200,
        11,
    )
    assert {name: logged.metrics[f"predicted_{name}"] for name in CLASSES} == tally.class_mix()
    assert sum(logged.metrics[f"predicted_share_{name}"] for name in CLASSES) == pytest.approx(1.0)
    assert logged.tags["model_uri"] == "models:/iris/2"  # the alias, resolved once
    assert logged.tags["rejects_path"] == logged.params["rejects"] == "out.rejects.csv"


def test_a_failure_in_the_middle_of_a_file_leaves_no_output_and_no_thread_behind(champion, tmp_path):
    import threading

    data = write_csv(tmp_path / "in.csv", 1200)
    calls = []

    def failing_predict(frame):
        calls.append(len(frame))
        if len(calls) == 3:
            raise RuntimeError("the model broke")
        return champion.predict(frame)

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="the model broke"):
        score_file(str(data.path), "out.csv", "rejects.csv", failing_predict, version=IRIS_MODEL, chunk_size=100)
    assert threading.active_count() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name or "rejects" in p.name) == []


def test_an_unreadable_line_deep_in_a_csv_file_fails_the_job_in_one_line(champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 20_000)
    with open(data.path, "ab") as handle:
        handle.write(b"row-x,5.1,3.5,1.4,0.2,\xff\xfe\n")
    with pytest.raises(StepError, match=r"^cannot read .*in\.csv: "):
        score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=1000)
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name or "rejects" in p.name) == []


def test_a_write_that_fails_part_way_fails_the_job_in_one_line_and_leaves_no_output(champion, tmp_path, monkeypatch):
    import pyarrow.csv as pacsv

    data = write_csv(tmp_path / "in.csv", 1200)
    written = []

    class DiskFillsUp(pacsv.CSVWriter):
        def write_table(self, table, max_chunksize=None):
            written.append(table.num_rows)
            if len(written) == 4:
                raise OSError("[Errno 28] No space left on device")
            return super().write_table(table, max_chunksize)

    monkeypatch.setattr(pacsv, "CSVWriter", DiskFillsUp)
    with pytest.raises(StepError, match=r"^cannot write (out|rejects)\.csv: \[Errno 28\] No space left on device$"):
        score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=100)
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name or "rejects" in p.name) == []
