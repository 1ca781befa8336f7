"""The model's columnar output (``predict_columns``) against its ``predict``, and versions made before it.

Batch scoring writes what ``predict_columns`` returns without a Python object per row;
everything else (``mlflow models serve``, ``spark_udf``, ``pyfunc.load_model``) gets
``predict``'s DataFrame. Both must give the same bytes, and versions registered with the
model code from before (``legacy_iris_model.py``) must keep scoring, to the same answers.
"""

import importlib.util
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
from hypothesis import example, given
from hypothesis import strategies as st

from iris_core.table.iris import IRIS
from steps.batch.outputs import json_numbers, model_predict
from steps.batch.pandas_engine import score_file
from steps.batch_predict import BatchJob, run_job
from steps.training import iris_model
from tests.helpers.batch_files import IRIS_MODEL, valid_features, write_csv, write_parquet

FEATURES = IRIS.feature_names

LEGACY_MODEL_CODE = Path(__file__).with_name("legacy_iris_model.py")


def legacy_module():
    spec = importlib.util.spec_from_file_location("legacy_iris_model", LEGACY_MODEL_CODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def features_frame(count: int, seed: int = 0) -> pd.DataFrame:
    values = valid_features(count, seed)
    values[:5] = [
        [1e6, 1e-3, 1e6, 1e-3],
        [1e-9, 1e-9, 1e-9, 1e-9],
        [7.9, 4.4, 6.9, 2.5],
        [4.3, 2.0, 1.0, 0.1],
        [1, 1, 1, 1],
    ]
    return pd.DataFrame(values, columns=list(FEATURES))


def test_predict_gives_the_same_frame_as_the_model_code_of_earlier_versions(champion):
    estimator = champion.unwrap_python_model().estimator
    frame = features_frame(2000)
    now, before = (
        iris_model.explain_predictions(estimator, frame),
        legacy_module().explain_predictions(estimator, frame),
    )
    pd.testing.assert_frame_equal(now, before, check_exact=True)
    assert now["confidence_scores"].tolist() == before["confidence_scores"].tolist()
    assert {type(v) for scores in now["confidence_scores"] for v in scores.values()} == {float}


def test_predict_columns_holds_exactly_what_predict_returns(champion):
    model = champion.unwrap_python_model()
    frame = features_frame(1000, seed=1)
    columns, rows = model.predict_columns(frame), champion.predict(frame)
    assert [columns["classes"][i] for i in columns["prediction_index"]] == rows["prediction"].tolist()
    assert columns["prediction_index"].tolist() == rows["prediction_index"].tolist()
    assert columns["confidence"].tolist() == rows["confidence"].tolist()
    assert [dict(zip(columns["classes"], p)) for p in columns["probabilities"].tolist()] == rows[
        "confidence_scores"
    ].tolist()


def test_batch_scoring_uses_the_columns_when_the_model_has_them(champion):
    assert model_predict(champion) == champion.unwrap_python_model().predict_columns


def test_the_columnar_path_writes_the_same_csv_bytes_as_predict(champion, tmp_path):
    data = write_csv(tmp_path / "in.csv", 3000, seed=7)
    score_file(
        str(data.path), "fast.csv", "fast.rejects.csv", model_predict(champion), version=IRIS_MODEL, chunk_size=700
    )
    score_file(str(data.path), "rows.csv", "rows.rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=700)
    assert Path("fast.csv").read_bytes() == Path("rows.csv").read_bytes()
    assert Path("fast.rejects.csv").read_bytes() == Path("rows.rejects.csv").read_bytes()


def test_the_columnar_path_writes_the_same_parquet_values_as_predict(champion, tmp_path):
    data = write_parquet(tmp_path / "in.parquet", 3000, seed=8)
    score_file(
        str(data.path),
        "fast.parquet",
        "fast.rejects.parquet",
        model_predict(champion),
        version=IRIS_MODEL,
        chunk_size=700,
    )
    score_file(
        str(data.path), "rows.parquet", "rows.rejects.parquet", champion.predict, version=IRIS_MODEL, chunk_size=700
    )
    assert pq.read_table("fast.parquet").equals(pq.read_table("rows.parquet"), check_metadata=True)
    fast, rows = pq.read_table("fast.rejects.parquet"), pq.read_table("rows.rejects.parquet")  # NaN among them
    assert fast.schema == rows.schema
    pd.testing.assert_frame_equal(fast.to_pandas(), rows.to_pandas(), check_exact=True)


@given(st.lists(st.floats(allow_nan=False), max_size=50))
@example([0.0, -0.0, 1.0, 1e-6, 9.999999999999999e-06, 1e-5, 1e-7, 5e-324, 1e16, 1e22, 0.1, 1 / 3, 2.0, -1.5])
def test_scores_in_csv_are_written_as_orjson_writes_them(values):
    expected = [orjson.dumps(v).decode() for v in values]
    assert json_numbers(np.array(values, dtype="float64")).to_pylist() == expected


def test_a_version_registered_with_the_earlier_model_code_and_no_contract_scores_the_same_rows(
    registry, champion, tmp_path, monkeypatch
):
    import mlflow

    from steps import train

    data = write_csv(tmp_path / "in.csv", 1500, seed=9)
    monkeypatch.setattr(train, "MODEL_CODE", LEGACY_MODEL_CODE)
    with mlflow.start_run():
        frame = pd.DataFrame(valid_features(20, 0), columns=list(FEATURES))
        info = train.log_pyfunc_model(champion.unwrap_python_model().estimator, frame, "iris", None)
    legacy_uri = f"models:/iris/{info.registered_model_version}"
    assert not hasattr(mlflow.pyfunc.load_model(legacy_uri).unwrap_python_model(), "predict_columns")
    for uri, output in ((legacy_uri, "legacy.csv"), ("models:/iris/2", "current.csv")):
        with mlflow.start_run():
            run_job(BatchJob(str(data.path), output, model_uri=uri, chunk_size=400).validated())
    assert Path("legacy.csv").read_bytes() == Path("current.csv").read_bytes()
    assert Path("legacy.rejects.csv").read_bytes() == Path("current.rejects.csv").read_bytes()
