"""The spark engine on other tables: the same rows, answers and rejects as the pandas engine, names with dots too."""

import pandas as pd
import pytest

from steps.batch.pandas_engine import score_file
from steps.batch.spark_engine import score_with_spark
from steps.registry.versions import read_version
from tests.helpers.batch_files import read_any
from tests.helpers.tables import WINE_LABEL, wine_frame

pytestmark = pytest.mark.slow


def wine_input(path, rename: dict | None = None) -> pd.DataFrame:
    """Wine rows with an id, a bad value in row 7 and a missing one in row 11."""
    rows = wine_frame().drop(columns=[WINE_LABEL]).astype({"hue": object})
    rows.insert(0, "id", [f"w{i:03d}" for i in range(len(rows))])
    rows.loc[7, "hue"] = "pale"
    rows.loc[11, "hue"] = None
    rows = rows.rename(columns=rename or {})
    rows.to_csv(path, index=False)
    return rows


def both_engines(spark, uri: str, source: str, output: str):
    import mlflow

    from steps.batch.outputs import model_predict

    version = read_version(uri)
    model = mlflow.pyfunc.load_model(uri)
    pandas_tally = score_file(source, f"pandas-{output}", "pandas-rejects.csv", model_predict(model), 64, version)
    spark_tally = score_with_spark(spark, source, f"spark-{output}", "spark-rejects.csv", uri, 64, version)
    return pandas_tally, spark_tally


@pytest.mark.parametrize("uri", ["models:/wine/1", "models:/wine_plain/1"])
def test_spark_scores_wine_as_the_pandas_engine_for_this_projects_model_and_a_plain_one(spark, wine, tmp_path, uri):
    wine_input(tmp_path / "in.csv")
    pandas_tally, spark_tally = both_engines(spark, uri, str(tmp_path / "in.csv"), "out.csv")
    assert spark_tally == pandas_tally and pandas_tally.rows_rejected == 2
    left = read_any("pandas-out.csv").sort_values("id", ignore_index=True)
    right = read_any("spark-out.csv").sort_values("id", ignore_index=True)
    assert list(left.columns) == list(right.columns)
    assert left["prediction"].tolist() == right["prediction"].tolist()
    assert set(left["prediction"]) <= {"0", "1", "2"}
    rejects = read_any("spark-rejects.csv").sort_values("input_line", key=lambda lines: lines.astype(int))
    assert rejects["reject_reason"].tolist() == ["hue: must be a number, got a string", "hue: missing"]
    if uri.endswith("wine_plain/1"):
        assert list(left.columns)[-1] == "prediction" and "confidence" not in left.columns


def test_spark_reads_feature_names_holding_dots_as_names_not_fields(spark, wine, tmp_path):
    """A model whose features hold dots (``Iris.sepal.length``-like names) is fed by its names."""
    import mlflow

    from tests.helpers.tables import register_plain_model

    renamed = {name: name.replace("_", ".") for name in wine_frame().columns if "_" in name}
    frame = wine_frame().rename(columns=renamed)
    version = register_plain_model("dotted", frame, WINE_LABEL)
    uri = f"models:/dotted/{version}"
    wine_input(tmp_path / "in.csv", renamed)
    pandas_tally, spark_tally = both_engines(spark, uri, str(tmp_path / "in.csv"), "out.csv")
    assert spark_tally == pandas_tally and pandas_tally.rows_scored == len(frame) - 2
    spark_out = read_any("spark-out.csv").sort_values("id", ignore_index=True)
    assert "total.phenols" in spark_out.columns
    expected = mlflow.pyfunc.load_model(uri).predict(frame.drop(columns=[WINE_LABEL]).drop(index=[7, 11]))
    assert spark_out["prediction"].tolist() == [str(v) for v in expected]
